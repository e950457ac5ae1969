# shellcheck shell=bash
# Helpers for scripts that run inside the lab's dom0 (bash): `. "$XENLAB_LIB"`.
# Forks cost 40-65 ms each in a PV dom0 under TCG and steal CPU from booting guests, so the
# waiting helpers use bash builtins only.

# A pipe nobody writes to: `read -t` on it is a sleep without a fork.
exec {_lab_tick}<> <(:)

# lab_sleep SECONDS (fractions allowed)
lab_sleep() { read -r -t "$1" -u "$_lab_tick" _ || true; }

# lab_ms_since START: milliseconds since START (an $EPOCHREALTIME value)
lab_ms_since() { echo $(( (${EPOCHREALTIME/./} - ${1/./}) / 1000 )); }

# lab_wait_for TIMEOUT_S COMMAND...: polls COMMAND every 50 ms; 0 once it succeeds, 1 at the
# timeout. COMMAND should be a builtin or a function (e.g. `[ -S path ]`) to stay fork-free.
lab_wait_for() {
  local max=$(( ${1%.*} * 20 )) n=0
  shift
  until "$@"; do
    n=$((n + 1)); [ $n -le $max ] || return 1
    lab_sleep 0.05
  done
  return 0
}

# lab_file_has FILE TEXT: whether FILE exists and contains TEXT (builtins only).
lab_file_has() {
  local -a lines
  [ -f "$1" ] || return 1
  mapfile -t lines < "$1"
  [[ "${lines[*]}" == *"$2"* ]]
}

# lab_xenconsoled: starts xenconsoled logging every guest's console to
# /var/log/xen/console/guest-NAME.log. Only `xl` needs it: spore's backend serves consoles itself.
lab_xenconsoled() {
  [ -e /run/xenconsoled.pid ] && return 0
  xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console ||
    { echo "xenconsoled did not start" >&2; return 1; }
  lab_wait_for 10 [ -s /run/xenconsoled.pid ]
}

# lab_bridge NAME CIDR: a Linux bridge with an address, for guests' vifs (`bridge=NAME`).
lab_bridge() {
  [ -d "/sys/class/net/$1" ] && return 0
  ip link add "$1" type bridge && ip addr add "$2" dev "$1" && ip link set "$1" up
}

# lab_domain_gone NAME_OR_ID [TIMEOUT_S]: waits until xl no longer lists the domain.
lab_domain_gone() {
  local n=0 max=$(( ${2:-20} * 5 ))
  while xl domid "$1" >/dev/null 2>&1; do
    n=$((n + 1)); [ $n -le $max ] || return 1
    lab_sleep 0.2
  done
  return 0
}

# lab_leftovers: what tests left behind, checked with Xen's own tools: domains other than dom0,
# xenstore homes, per-domain backend directories, /vm entries, loop devices. Prints nothing
# when nothing is left. (The per-kind directories backend/vbd etc. are shared by all domains and
# stay, as with xl.)
lab_leftovers() {
  local l
  l=$(xl list | tail -n +3); [ -z "$l" ] || echo "domains: $l"
  l=$(xenstore-ls -f /local/domain 2>/dev/null | grep -v '^/local/domain/0/' | grep -v '^/local/domain/0 ' | head -n 5)
  [ -z "$l" ] || echo "xenstore: $l"
  l=$(xenstore-ls -f /local/domain/0/backend 2>/dev/null | grep -E '^/local/domain/0/backend/[a-z]+/[0-9]' | head -n 5)
  [ -z "$l" ] || echo "backends: $l"
  l=$(xenstore-ls -f /vm 2>/dev/null | head -n 5)
  [ -z "$l" ] || echo "/vm: $l"
  l=$(losetup -a)
  [ -z "$l" ] || echo "loop devices: $l"
}
