#!/bin/bash
# Inside the lab's dom0 (run by xenlab/tests/spored.sh): the real spored on its Xen backend and
# sporectl, as an operator runs them, with Xen's own tools (xl, xenstore-ls, losetup) used only
# to check what spore left behind.
set -u
. "$XENLAB_LIB"
P=/payload
state=/run/lab/state sock=/run/lab/spored.sock log=/run/lab/spored.log
failed=0
spored_pid=

ok() { echo "ok   $*"; }
fail() { echo "FAIL $*"; failed=1; }
ctl() { "$P/sporectl" --socket "$sock" "$@"; }
ms() { lab_ms_since "$1"; }

# The guest bundle where spored looks for it by default (<state>/guest), on tmpfs: a first read
# of the kernel over 9p would be counted in the first launch.
mkdir -p "$state/guest"
cp "$P/kernel" "$P/initrd" "$state/guest/"

start_spored() { # [SPORED ARGS...]
  "$P/spored" --state-dir "$state" --socket "$sock" --backend xen "$@" >> "$log" 2>&1 &
  spored_pid=$!
  local n=0 st
  until st=$(ctl -o json host status 2>/dev/null) && [[ $st == *'"backend": "BACKEND_KIND_XEN"'* ]]; do
    n=$((n + 1))
    if [ $n -gt 120 ] || ! kill -0 "$spored_pid" 2>/dev/null; then
      echo "spored did not come up on the Xen backend; its log:"; tail -n 30 "$log"
      echo "host status: ${st:-none}"
      return 1
    fi
    lab_sleep 0.5
  done
}

stop_spored() { # SIGTERM, as systemd stops it; zones are left running
  kill -TERM "$spored_pid" 2>/dev/null
  wait "$spored_pid"
  local rc=$?
  spored_pid=
  return $rc
}

# zone_field NAME KEY: the last JSON value of KEY in `zone get NAME` (the status comes after
# the spec, which may have the same key: vcpus, memoryMib).
zone_field() {
  local out
  out=$(ctl -o json zone get "$1" 2>/dev/null) || return 1
  [[ $out == *"\"$2\": "* ]] || return 1
  out="\"$2\": ${out##*\"$2\": }"
  local re="^\"$2\": (\"([^\"]*)\"|([^,}[:space:]]+))"
  [[ $out =~ $re ]] && echo "${BASH_REMATCH[2]}${BASH_REMATCH[3]}"
}

# wait_state NAME STATE TIMEOUT_S: until the zone is in STATE (e.g. ZONE_STATE_RUNNING).
wait_state() {
  local n=0 max=$(( $3 * 2 )) s
  until s=$(zone_field "$1" state) && [ "$s" = "$2" ]; do
    n=$((n + 1)); [ $n -le $max ] || { echo "zone $1 is ${s:-unknown}, not $2, after $3 s"; return 1; }
    lab_sleep 0.5
  done
}

# wait_log NAME TEXT TIMEOUT_S: until the zone's console log has TEXT.
wait_log() {
  local n=0 max=$(( $3 * 2 ))
  until ctl zone logs "$1" 2>/dev/null | grep -q "$2"; do
    n=$((n + 1)); [ $n -le $max ] || { echo "zone $1 never printed '$2' in $3 s"; return 1; }
    lab_sleep 0.5
  done
}

# zone_files: what spored's zones directory holds, except the console logs of ended zones whose
# records are kept (`zone logs` reads them until the zone is destroyed).
zone_files() {
  (cd "$state/zones" 2>/dev/null && find . -mindepth 1 ! -type d ! -name 'console.log*' | sed 's/^/zone file: /')
}

# nothing_left WHAT: xl list, xenstore-ls and losetup show nothing of any zone, and spored's
# zones directory holds no more than the console logs of ended zones.
nothing_left() {
  local left n=0
  # A domain's xenstore home goes a moment after the domain itself (xenstored's release).
  until left=$(lab_leftovers; zone_files) && [ -z "$left" ]; do
    n=$((n + 1)); [ $n -le 20 ] || break
    lab_sleep 0.5
  done
  if [ -z "$left" ]; then ok "$1: nothing left (xl list, xenstore-ls, losetup, zones dir)"
  else fail "$1: left behind: $left"; fi
}

finish() {
  [ -n "$spored_pid" ] && stop_spored
  cp "$log" "$XENLAB_RESULTS/spored.log" 2>/dev/null
  echo "spored.sh: $([ $failed = 0 ] && echo PASS || echo FAIL)"
  exit $failed
}

t=$EPOCHREALTIME
start_spored || { failed=1; finish; }
ok "spored up on the Xen backend in $(ms "$t") ms"
ctl host status | sed 's/^/  /'

out=$(ctl image import "$P/demo-oci" --tag demo 2>&1) || { fail "image import: $out"; finish; }
ok "demo image imported"

echo "== output and exit code"
t=$EPOCHREALTIME
out=$(ctl zone launch --attach --rm --name hello demo sh -c 'echo "hello from $(uname -s) $(uname -r)"; exit 7' 2>&1)
rc=$?
echo "$out" | sed 's/^/  | /'
if [ $rc = 7 ] && [[ $out == *"hello from Linux"* ]]; then
  ok "launch --attach: output and exit code 7 in $(ms "$t") ms"
else fail "launch --attach: exit code $rc (want 7), output above"; fi
ctl zone get hello >/dev/null 2>&1 && fail "--rm left the zone record"
nothing_left "exited zone (--rm)"

echo "== a signal death"
out=$(ctl zone launch --attach --name killed demo sh -c 'echo dying; kill -9 $$' 2>&1)
rc=$?
sig=$(zone_field killed signal)
if [ $rc = 137 ] && [ "$sig" = 9 ] && [[ $out == *dying* ]]; then
  ok "SIGKILL: sporectl exit 137, zone status signal 9"
else fail "SIGKILL: sporectl exit $rc (want 137), zone signal '${sig}' (want 9), output: $out"; fi
st=$(zone_field killed state)
[ "$st" = ZONE_STATE_EXITED ] || fail "the killed zone is $st, not EXITED"
# The zone record stays until destroyed, its domain does not.
nothing_left "exited zone (record kept)"
out=$(ctl zone destroy killed 2>&1) || fail "destroy of an exited zone: $out"

# rss_anon: spored's anonymous resident memory, KiB (what it holds itself, not file pages).
rss_anon() { local k v _; while read -r k v _; do [ "$k" = RssAnon: ] && echo "$v"; done < "/proc/$spored_pid/status"; }

echo "== three zones at once"
anon0=$(rss_anon)
t=$EPOCHREALTIME
for z in one two three; do
  size=(); [ "$z" = two ] && size=(--cpus 2 --memory 256)
  ctl zone launch --name "$z" "${size[@]}" demo sh -c "echo zone $z up; sleep 600" >/dev/null || fail "launch $z"
done
for z in one two three; do wait_state "$z" ZONE_STATE_RUNNING 300 || fail "zone $z not running"; done
for z in one two three; do wait_log "$z" "zone $z up" 120 || fail "zone $z output"; done
ok "three zones running and printing $(ms "$t") ms after the first request"
n=$(xl list | tail -n +3 | wc -l)
[ "$n" = 3 ] && ok "xl list shows 3 guest domains" || { fail "xl list shows $n guest domains, not 3"; xl list; }
anon3=$(rss_anon)
echo "  spored RssAnon: $anon0 KiB before, $anon3 KiB with three zones running ($(( (anon3 - anon0) / 3 )) KiB per zone)"
doms=$(for z in one two three; do zone_field "$z" domain; done | sort -u | wc -l)
[ "$doms" = 3 ] || fail "the three zones do not name three distinct domains"

echo "== exec and metrics in a PV zone"
out=$(ctl zone exec one sh -c 'echo exec out; echo exec err >&2; exit 3' 2>&1)
rc=$?
if [ $rc = 3 ] && [[ $out == *"exec out"* ]] && [[ $out == *"exec err"* ]]; then
  ok "exec: output and exit code 3"
else fail "exec: exit $rc (want 3), output: $out"; fi
out=$(echo from stdin | ctl zone exec -i one cat 2>&1)
[ "$out" = "from stdin" ] && ok "exec -i: stdin reaches the process" || fail "exec -i cat: $out"
out=$(ctl zone exec -t one sh -c 'tty; exit 4' 2>&1)
rc=$?
if [ $rc = 4 ] && [[ $out == */dev/pts/* ]]; then ok "exec -t: a terminal in the guest ($(echo "$out" | tr -d '\r' | head -n1)), exit 4"
else fail "exec -t: exit $rc (want 4), output: $out"; fi
out=$(ctl zone top one 2>&1)
[[ $out == *"sleep 600"* ]] && ok "top shows the workload" || fail "top: $out"
times=()
for _ in $(seq 20); do
  t=$EPOCHREALTIME
  ctl zone exec one true >/dev/null 2>&1 || fail "exec true"
  times+=("$(ms "$t")")
done
median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 10p)
ok "exec true round trip (sporectl, request to exit code): median of 20 is $median ms"

echo "== resources of a running zone"
d=$(zone_field two domain); d=${d#domid }
out=$(ctl zone resources two --cpus 1 --memory 160 2>&1) || fail "zone resources: $out"
target=$(xenstore-read "/local/domain/$d/memory/target") cpu1=$(xenstore-read "/local/domain/$d/cpu/1/availability")
v=$(zone_field two vcpus) m=$(zone_field two memoryMib)
if [ "$target" = 163840 ] && [ "$cpu1" = offline ] && [ "$v" = 1 ] && [ "$m" = 160 ]; then
  ok "zone resources: 1 vCPU and 160 MiB in xenstore (target $target KiB, cpu/1 $cpu1) and in the zone's status"
else fail "zone resources: xenstore target '$target', cpu/1 '$cpu1', status $v vCPUs $m MiB"; fi
# The guest's balloon driver gives the memory back: the domain shrinks (xl list's Mem column).
n=0
until mem=$(xl list "$d" | awk 'NR==2{print $3}') && [ "${mem:-999}" -le 170 ]; do
  n=$((n + 1)); [ $n -le 60 ] || break
  lab_sleep 0.5
done
[ "${mem:-999}" -le 170 ] && ok "the domain shrank to $mem MiB" || fail "the domain still has ${mem:-?} MiB, not about 160"
out=$(ctl zone resources two --cpus 3 2>&1)
if [ $? != 0 ] && [[ $out == *"created with 2"* ]]; then ok "more vCPUs than created refused: $out"
else fail "--cpus 3 on a 2-vCPU zone: $out"; fi
t=$EPOCHREALTIME
out=$(ctl zone destroy one two three 2>&1) || fail "destroy: $out"
ok "destroyed three running zones in $(ms "$t") ms"
left=$(ctl zone list -q)
[ -z "$left" ] || fail "zone list still has: $left"
nothing_left "destroy of three running zones"

echo "== spored restart with a running zone"
ctl zone launch --name survivor demo sh -c 'echo before restart; sleep 45; echo after restart; exit 5' >/dev/null ||
  fail "launch survivor"
wait_state survivor ZONE_STATE_RUNNING 300 && wait_log survivor "before restart" 60 || fail "survivor did not start"
dom=$(zone_field survivor domain)
t=$EPOCHREALTIME
stop_spored || fail "spored did not stop cleanly on SIGTERM (exit $?)"
xl list | tail -n +3 | grep -q . || fail "stopping spored took the zone's domain down"
start_spored || { fail "spored did not restart"; finish; }
ok "spored stopped and started again in $(ms "$t") ms"
st=$(zone_field survivor state) dom2=$(zone_field survivor domain)
if [ "$st" = ZONE_STATE_RUNNING ] && [ -n "$dom" ] && [ "$dom2" = "$dom" ]; then
  ok "re-adopted: still RUNNING on the same domain ($dom)"
else fail "after the restart: state $st on '$dom2' (was RUNNING on '$dom')"; fi
# --replay: on a loaded host the zone may print before attach connects; the stored log has
# it then, and only the re-adopted console could have put it there.
out=$(ctl zone attach --replay survivor 2>&1)
rc=$?
if [ $rc = 5 ] && [[ $out == *"before restart"*"after restart"* ]]; then
  ok "attach after the restart: output from before and after it, and exit code 5"
else fail "attach after the restart: exit $rc (want 5), output: $out"; fi
nothing_left "zone exited after the restart"
out=$(ctl zone destroy survivor 2>&1) || fail "destroy survivor: $out"

echo "== an exit while spored is down"
# The guest re-sends its Exit until spored acknowledges it, and powers off only then: the
# status of a workload that ends while spored is stopped is recorded by the next spored.
ctl zone launch --name late demo sh -c 'echo up; sleep 20; exit 6' >/dev/null || fail "launch late"
wait_state late ZONE_STATE_RUNNING 300 && wait_log late up 60 || fail "late did not start"
t=$EPOCHREALTIME # "up" is out: the workload exits about 20 s from now
stop_spored || fail "spored did not stop cleanly on SIGTERM (exit $?)"
# Well past the workload's exit (the slack covers a late timer under TCG).
while [ "$(ms "$t")" -lt 32000 ]; do lab_sleep 1; done
if xl list | tail -n +3 | grep -q .; then
  ok "the domain is still there $(ms "$t") ms after 'up' (the guest waits for the exit ack)"
else fail "the domain went away while spored was down: the guest did not wait for the exit ack"; fi
t=$EPOCHREALTIME
start_spored || { fail "spored did not restart"; finish; }
if wait_state late ZONE_STATE_EXITED 120; then
  code=$(zone_field late code)
  [ "$code" = 6 ] && ok "EXITED with code 6, recorded $(ms "$t") ms after spored started again" ||
    fail "late: exit code '${code}' (want 6)"
else fail "late: $(zone_field late state) ($(zone_field late reason)), not EXITED with code 6"; fi
nothing_left "zone that exited while spored was down"
out=$(ctl zone destroy late 2>&1) || fail "destroy late: $out"
nothing_left "late destroyed"

echo "== a guest that never starts"
# An initrd whose /init sleeps: the domain runs, the workload never starts. spored fails the
# zone after zones.start_timeout_secs and destroys the domain, so nothing is left hanging.
stop_spored || fail "spored did not stop cleanly on SIGTERM (exit $?)"
printf '[zones]\nstart_timeout_secs = 40\n' > /run/lab/spored-start-timeout.toml
start_spored --config /run/lab/spored-start-timeout.toml || { fail "spored did not restart"; finish; }
t=$EPOCHREALTIME
out=$(ctl zone launch --attach --name stuck --initrd "$P/hang-initrd" demo true 2>&1)
rc=$?
if [ $rc = 125 ] && [[ $out == *"the guest did not start within 40 s"* ]]; then
  ok "launch --attach of a guest that never starts: exit 125 after $(ms "$t") ms: $out"
else fail "a guest that never starts: sporectl exit $rc (want 125), output: $out"; fi
st=$(zone_field stuck state)
[ "$st" = ZONE_STATE_FAILED ] || fail "the stuck zone is $st, not FAILED"
nothing_left "a guest that never started (FAILED, record kept)"
out=$(ctl zone destroy stuck 2>&1) || fail "destroy stuck: $out"

echo "== spored stops"
stop_spored || fail "spored did not stop cleanly on SIGTERM"
nothing_left "at the end"
left=$(ls -A "$state/zones")
[ -z "$left" ] || fail "zone directories left after every zone was destroyed: $left"
finish
