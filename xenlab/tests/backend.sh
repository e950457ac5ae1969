#!/usr/bin/env bash
# The Xen backend in the Xen lab: boots Xen + dom0 (xenlab/lab.sh) and runs the lab driver
# (xenlab/driver, package xenlab-driver, a static musl binary) inside dom0 against the real
# hypervisor, with the guest bundle (target/guest) and a busybox squashfs built here:
#   - zones print, report Started and Exit(0) / Exit(7) over IDM, power off (wait_stopped);
#   - three zones at once (one with 2 vCPUs, one with a vif), update_resources, a fresh backend
#     re-adopts them (list, console, IDM ping), destroy while running, a domain destroyed
#     behind spore's back (Killed), a guest kernel crash (Crash); a new process takes over a
#     zone the previous one left running (list, console, IDM ping, destroy);
#   - after each destroy: no domain, no xenstore node, no loop device; at the end the same
#     checked with Xen's own tools (xl list, xenstore-ls, losetup);
#   - RUNS timed zones and RUNS `xl create`s of the same kernel, initrd and devices (peer).
#
# usage: xenlab/tests/backend.sh [RUNS]      (default 3; exit code 0 = every check passed)
# The driver's full output, the zones' consoles included, ends up in target/xenlab-backend/
# (XENLAB_BACKEND_RESULTS). The timed runs boot without `quiet`, so their first console byte is
# the guest kernel's first line under both toolstacks.
# Needs: scripts/install-deps.sh (qemu, musl-tools, squashfs-tools, busybox-static), the guest
# bundle (built here with kernel/build-bundle.sh when target/guest lacks it).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
runs=${1:-3}
cd "$repo"
say() { printf 'backend.sh: %s\n' "$*" >&2; }
. "$repo/xenlab/tests/host.sh"

bundle=$(guest_bundle)
say "building the lab driver (static, musl)"
CC_x86_64_unknown_linux_musl=${CC_x86_64_unknown_linux_musl:-musl-gcc} \
  cargo build -q -p xenlab-driver --release --target x86_64-unknown-linux-musl
driver=${CARGO_TARGET_DIR:-$repo/target}/x86_64-unknown-linux-musl/release/xenlab-driver

tmp=$(mktemp -d /tmp/spore-xenbackend.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# The zones' root image: busybox, padded to 4 KiB as the image store does.
mkdir -p "$tmp/rootfs/bin" "$tmp/rootfs/etc"
cp /bin/busybox "$tmp/rootfs/bin/busybox"
for a in sh echo sleep cat true; do ln -s busybox "$tmp/rootfs/bin/$a"; done
echo 'root:x:0:0:root:/:/bin/sh' > "$tmp/rootfs/etc/passwd"
mksquashfs "$tmp/rootfs" "$tmp/root.squashfs" -noappend -quiet -no-progress -all-root >/dev/null
truncate -s "$(( ($(stat -c %s "$tmp/root.squashfs") + 4095) / 4096 * 4096 ))" "$tmp/root.squashfs"

stage_lab "$tmp" "$repo/xenlab/tests/backend-dom0.sh"
results=${XENLAB_BACKEND_RESULTS:-$repo/target/xenlab-backend}
rm -rf "$results"
rc=0
"$tmp/lab/lab.sh" run --timeout "${XENLAB_BACKEND_TIMEOUT:-1800}" --mem 2048 --results "$results" \
  --payload "$driver:xenlab-driver" --payload "$bundle/vmlinux:vmlinux" --payload "$bundle/initrd:initrd" \
  --payload "$tmp/root.squashfs:root.squashfs" \
  "$tmp/backend-dom0.sh" "$runs" || rc=$?
say "the lab driver's full output (with the zones' consoles): $results/{backend,time,peer}.log"
exit $rc
