#!/bin/bash
# `lab.sh xl-baseline`, inside dom0: the reference toolstack, for comparison only. Boots PV
# guests with `xl create` RUNS times each and prints, per run, from the start of `xl create`:
#   xl_ms     until `xl create` returns (domain built, devices' hotplug scripts done, unpaused)
#   first_ms  until the guest's first console byte (xenconsoled's log of the guest)
#   init_ms   until the kernel's "Run /init as init process" line (kernel boot done)
#   marker_ms until the busybox guest's own marker line (debian guest only)
#   kinit_s   the guest kernel's own timestamp on the "Run /init" line
# Guests: "debian" (/payload/debian/{vmlinux,initrd}: Debian's kernel, busybox initrd, no
# devices) and, when /payload/custom/kernel exists, "custom" (its initrd, /payload/custom/disk
# on xvda read-only, a vif on bridge xenbr0 when VIF=1). Results: $XENLAB_RESULTS/xl-baseline.txt.
# usage: xl-baseline.sh RUNS [VIF]
set -u
# shellcheck source=xenlab/dom0/lib.sh
. "$XENLAB_LIB"
runs=$1 vif=${2:-0}
out=$XENLAB_RESULTS/xl-baseline.txt
: > "$out"
lab_xenconsoled || exit 1
logdir=/var/log/xen/console
failed=0

# cfg NAME KERNEL INITRD DISK VIF: writes /run/NAME.cfg
cfg() {
  {
    echo "name = \"$1\""
    echo 'type = "pv"'
    echo "kernel = \"$2\""
    [ -n "$3" ] && echo "ramdisk = \"$3\""
    echo 'extra = "console=hvc0"'
    echo 'memory = 128'
    echo 'vcpus = 1'
    echo 'on_poweroff = "destroy"'
    echo 'on_reboot = "destroy"'
    echo 'on_crash = "destroy"'
    [ -n "$4" ] && echo "disk = [ 'format=raw,vdev=xvda,access=ro,target=$4' ]"
    [ "$5" = 1 ] && echo "vif = [ 'bridge=xenbr0' ]"
  } > "/run/$1.cfg"
}

# one GUEST RUN KERNEL INITRD DISK VIF MARKER
one() {
  local name=$1-$2 log=$logdir/guest-$1-$2.log marker=$7
  local t xl_ms first_ms=- init_ms=- marker_ms=- kinit=- n line lines
  cfg "$name" "$3" "$4" "$5" "$6"
  t=$EPOCHREALTIME
  if ! xl create -q "/run/$name.cfg" > "/run/$name.xl" 2>&1; then
    echo "FAIL $name: xl create: $(< "/run/$name.xl")"
    failed=1
    return
  fi
  xl_ms=$(lab_ms_since "$t")
  n=0
  # Until the last awaited line, at most 120 s; 20 ms polls with builtins only.
  while [ $n -lt 6000 ]; do
    if [ "$first_ms" = - ] && [ -s "$log" ]; then first_ms=$(lab_ms_since "$t"); fi
    if [ "$first_ms" != - ]; then
      mapfile -t lines < "$log"
      if [ "$init_ms" = - ]; then
        for line in "${lines[@]}"; do
          if [[ $line == *"Run /init as init process"* ]]; then
            init_ms=$(lab_ms_since "$t")
            [[ $line =~ \[\ *([0-9]+\.[0-9]+)\] ]] && kinit=${BASH_REMATCH[1]}
            break
          fi
        done
      fi
      if [ -n "$marker" ] && [ "$marker_ms" = - ] && [[ "${lines[*]}" == *"$marker"* ]]; then
        marker_ms=$(lab_ms_since "$t")
      fi
      [ "$init_ms" != - ] && { [ -z "$marker" ] || [ "$marker_ms" != - ]; } && break
    fi
    n=$((n + 1))
    lab_sleep 0.02
  done
  local line_out="$1 run=$2 xl_ms=$xl_ms first_ms=$first_ms init_ms=$init_ms marker_ms=$marker_ms kinit_s=$kinit"
  if [ "$init_ms" = - ] || { [ -n "$marker" ] && [ "$marker_ms" = - ]; }; then
    echo "FAIL $line_out (timeout; the guest's console:)"
    sed 's/^/  | /' "$log" 2>/dev/null | tail -n 30
    failed=1
  else
    echo "$line_out"
    echo "$line_out" >> "$out"
  fi
  # The busybox guest powers itself off; the bundle's init waits for spored, so destroy it.
  if [ -n "$marker" ] && lab_domain_gone "$name" 30; then return; fi
  t=$EPOCHREALTIME
  xl destroy "$name" > /dev/null 2>&1
  lab_domain_gone "$name" 30 || { echo "FAIL $name is still listed 30 s after xl destroy"; failed=1; }
  echo "  $name destroy_ms=$(lab_ms_since "$t")"
}

median() { # prints the median of the numeric arguments ('-' when none)
  local v=() x
  for x in "$@"; do [ "$x" != - ] && v+=("$x"); done
  [ ${#v[@]} -gt 0 ] || { echo -; return; }
  printf '%s\n' "${v[@]}" | sort -n | sed -n "$(( (${#v[@]} + 1) / 2 ))p"
}
summary() { # GUEST
  local f k vals=()
  for k in xl_ms first_ms init_ms marker_ms; do
    vals=()
    while read -r -a f; do
      for x in "${f[@]}"; do [[ $x == $k=* ]] && vals+=("${x#*=}"); done
    done < <(grep "^$1 " "$out")
    printf ' median_%s=%s' "$k" "$(median "${vals[@]}")"
  done
}

echo "xl-baseline: Xen $(xl info | sed -n 's/^xen_version *: *//p'), dom0 kernel $(uname -r), $runs runs per guest, 128 MiB, 1 vCPU"
for r in $(seq 1 "$runs"); do
  one debian "$r" /payload/debian/vmlinux /payload/debian/initrd "" 0 XENLAB-GUEST-MARKER
done
echo "debian:$(summary debian)" | tee -a "$out"
if [ -e /payload/custom/kernel ]; then
  initrd=; [ -e /payload/custom/initrd ] && initrd=/payload/custom/initrd
  disk=; [ -e /payload/custom/disk ] && disk=/payload/custom/disk
  [ "$vif" = 1 ] && { lab_bridge xenbr0 10.99.0.1/24 || { echo "FAIL bridge xenbr0"; exit 1; }; }
  echo "custom guest: kernel $(stat -c %s /payload/custom/kernel) bytes, initrd ${initrd:-none}, disk ${disk:-none}, vif $vif"
  for r in $(seq 1 "$runs"); do
    one custom "$r" /payload/custom/kernel "$initrd" "$disk" "$vif" ""
  done
  echo "custom:$(summary custom)" | tee -a "$out"
fi
left=$(xl list | tail -n +3)
[ -z "$left" ] || { echo "FAIL domains left: $left"; failed=1; }
exit $failed
