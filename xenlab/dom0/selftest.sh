#!/bin/bash
# `lab.sh selftest`, inside dom0: the Xen devices exist, xenstored answers, xl sees Domain-0,
# the payload arrived intact and the result goes back. Prints `selftest: PASS` and exits 0 only
# when every check holds; the host side (lab.sh) checks the output, stderr and result file.
# usage: selftest.sh SHA256_OF_/payload/in/blob.bin
set -u
# shellcheck source=xenlab/dom0/lib.sh
. "$XENLAB_LIB"
want=$1
failed=0
check_dev() { if [ -c "$1" ]; then echo "ok   $1"; else echo "FAIL $1 is not a character device"; failed=1; fi; }

for d in /dev/xen/privcmd /dev/xen/evtchn /dev/xen/gntdev /dev/xen/gntalloc; do check_dev "$d"; done
caps=$(< /proc/xen/capabilities)
if [ "$caps" = control_d ]; then echo "ok   /proc/xen/capabilities = control_d"; else echo "FAIL /proc/xen/capabilities = '$caps'"; failed=1; fi

# xenstored answers: a write read back through the socket, and dom0's name from xen-init-dom0.
if xenstore-write /local/domain/0/xenlab-selftest hello && [ "$(xenstore-read /local/domain/0/xenlab-selftest)" = hello ]; then
  echo "ok   xenstored answers (write + read back)"
else
  echo "FAIL xenstored does not answer"; failed=1
fi
name=$(xenstore-read /local/domain/0/name 2>&1)
if [ "$name" = Domain-0 ]; then echo "ok   xenstore /local/domain/0/name = Domain-0"; else echo "FAIL /local/domain/0/name = '$name'"; failed=1; fi

list=$(xl list 2>&1)
echo "$list" | sed 's/^/     /'
if [[ $list == *$'\n'"Domain-0 "*" 0 "* ]]; then echo "ok   xl list shows Domain-0 with id 0"; else echo "FAIL xl list shows no Domain-0"; failed=1; fi
info=$(xl info 2>&1)
ver=$(sed -n 's/^xen_version *: *//p' <<<"$info")
free=$(sed -n 's/^free_memory *: *//p' <<<"$info")
echo "     xen_version=$ver free_memory=${free}MiB"
[[ $ver == 4.17* ]] && echo "ok   xl info: Xen $ver" || { echo "FAIL xl info reports Xen '$ver'"; failed=1; }

for m in xen_blkback xen_netback loop squashfs overlay tun bridge 9p; do
  [ -d "/sys/module/$m" ] || { echo "FAIL module $m is not loaded"; failed=1; }
done
[ $failed = 0 ] && echo "ok   modules loaded (blkback, netback, loop, squashfs, overlay, tun, bridge, 9p)"

# Payload in (read-only share), result out.
got=$(sha256sum /payload/in/blob.bin | cut -d' ' -f1)
if [ "$got" = "$want" ]; then echo "ok   payload sha256 matches"; else echo "FAIL payload sha256 $got, want $want"; failed=1; fi
if touch /payload/in/blob.bin 2>/dev/null; then echo "FAIL the payload share is writable"; failed=1; else echo "ok   payload share is read-only"; fi
# A loop device over a payload file: how the Xen backend attaches zone images.
if lo=$(losetup -f --show -r /payload/in/blob.bin 2>&1) && [ "$(sha256sum < "$lo" | cut -d' ' -f1)" = "$want" ]; then
  echo "ok   read-only loop device over a payload file ($lo)"; losetup -d "$lo"
else
  echo "FAIL loop device over a payload file: $lo"; failed=1
fi
echo "$got" > "$XENLAB_RESULTS/blob.sha256"

echo "selftest-stderr-line" >&2
if [ $failed = 0 ]; then echo "selftest: PASS"; exit 0; fi
echo "selftest: FAIL"
exit 1
