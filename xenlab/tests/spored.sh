#!/usr/bin/env bash
# spored on Xen, end to end in the Xen lab: boots Xen + dom0 (xenlab/lab.sh) and runs the real
# spored (Xen backend) and sporectl inside dom0 with the guest bundle and the busybox demo image
# (scripts/demo-image.sh, imported as an OCI layout). xenlab/tests/spored-dom0.sh has the checks:
# output and exit code, a signal death, three zones at once (with exec, exec -i/-t, top and the
# exec round trip in one of them), destroy leaving no domain, xenstore
# node or loop device (checked with xl list, xenstore-ls, losetup), a spored restart that
# re-adopts a running zone which then exits with its own code, and a workload that exits while
# spored is stopped (the domain waits for the exit ack; the next spored records the code), and a
# guest that never starts its workload (FAILED after the start timeout, its domain destroyed).
#
# usage: xenlab/tests/spored.sh      (exit code 0 = every check passed)
# spored's log and the zones' consoles end up in target/xenlab-spored/ (XENLAB_SPORED_RESULTS).
# Needs: scripts/install-deps.sh (qemu, umoci, busybox-static), the guest bundle (built here
# with kernel/build-bundle.sh when target/guest lacks it).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
say() { printf 'spored.sh: %s\n' "$*" >&2; }
. "$repo/xenlab/tests/host.sh"

bundle=$(guest_bundle)
# The dev profile: .ci/run has just built it for the tests, so this costs seconds there.
say "building spored and sporectl"
cargo build -q --locked -p spored -p sporectl
bin=${CARGO_TARGET_DIR:-$repo/target}/debug

tmp=$(mktemp -d /tmp/spore-xenspored.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# Without debug info the two binaries are 10x smaller to carry into the lab over 9p.
for b in spored sporectl; do objcopy --strip-debug "$bin/$b" "$tmp/$b"; done
scripts/demo-image.sh "$tmp/demo-oci" demo >/dev/null
# An initrd whose /init never starts a workload (the start-timeout case).
mkdir -p "$tmp/hang/bin"
cp /bin/busybox "$tmp/hang/bin/busybox"
printf '#!/bin/busybox sh\nexec /bin/busybox sleep 100000\n' > "$tmp/hang/init"
chmod 0755 "$tmp/hang/init"
(cd "$tmp/hang" && find . | cpio -o -H newc --quiet) > "$tmp/hang.initrd"

stage_lab "$tmp" "$repo/xenlab/tests/spored-dom0.sh"
results=${XENLAB_SPORED_RESULTS:-$repo/target/xenlab-spored}
rm -rf "$results"
rc=0
"$tmp/lab/lab.sh" run --timeout "${XENLAB_SPORED_TIMEOUT:-1200}" --mem 2048 --results "$results" \
  --payload "$tmp/spored:spored" --payload "$tmp/sporectl:sporectl" \
  --payload "$bundle/kernel:kernel" --payload "$bundle/initrd:initrd" \
  --payload "$tmp/demo-oci:demo-oci" --payload "$tmp/hang.initrd:hang-initrd" \
  "$tmp/spored-dom0.sh" || rc=$?
say "spored's log and the zones' consoles: $results/"
exit $rc
