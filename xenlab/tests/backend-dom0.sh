#!/bin/bash
# Inside the lab's dom0 (run by xenlab/tests/backend.sh): the backend's lab driver, then
# independent checks with Xen's own tools, then the timed comparison with `xl create`.
set -u
. "$XENLAB_LIB"
runs=${1:-3}
P=/payload
work=/run/lab/work
mkdir -p "$work"
# spored keeps the bundle and images on a local filesystem: here tmpfs, not the 9p share
# (a first read of the 66 MB kernel over 9p would be counted in the first zone's launch).
cp "$P/root.squashfs" "$P/vmlinux" "$P/initrd" /run/lab/
root=/run/lab/root.squashfs K=/run/lab/vmlinux I=/run/lab/initrd
failed=0

# drive NAME ARGS...: runs the lab driver, prints its results (the zones' consoles only on
# failure; all of it goes to the results share as NAME.log).
drive() {
  local name=$1 rc; shift
  "$P/xenlab-driver" "$@" > "/run/lab/$name.log" 2>&1; rc=$?
  grep -v '^GUEST| ' "/run/lab/$name.log"
  cp "/run/lab/$name.log" "$XENLAB_RESULTS/" 2>/dev/null
  if [ $rc != 0 ]; then
    failed=1
    echo "--- the zones' consoles (last 60 lines):"
    grep '^GUEST| ' "/run/lab/$name.log" | tail -n 60
  fi
}

echo "== backend: create, consoles, IDM, exit codes, re-adoption, destroy, stop reasons"
t=$EPOCHREALTIME
drive backend backend "$K" "$I" "$root" "$work"
echo "backend_test_ms=$(lab_ms_since "$t")"
echo "== adopt: a new process takes over the zone the last one left running"
drive adopt adopt "$K" "$I" "$root" "$work"
left=$(lab_leftovers)
if [ -n "$left" ]; then echo "FAIL left behind (xl/xenstore-ls/losetup): $left"; failed=1
else echo "independent check (xl list, xenstore-ls, losetup): nothing left"; fi

echo "== time: $runs spore zones (xvda root, xvdb config, vif)"
drive time time "$K" "$I" "$root" "$work" "$runs"

echo "== peer: $runs xl creates of the same kernel, initrd and devices"
lab_xenconsoled || failed=1
lab_bridge xenbr0 10.99.0.1/24 || failed=1
drive peer peer "$K" "$I" "$root" "$work" "$runs"
lab_sleep 2
left=$(lab_leftovers)
[ -z "$left" ] || { echo "FAIL left behind after the peer: $left"; failed=1; }
echo "backend.sh: $([ $failed = 0 ] && echo PASS || echo FAIL)"
exit $failed
