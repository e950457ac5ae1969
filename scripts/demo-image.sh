#!/usr/bin/env bash
# Builds a small OCI image without Docker or a registry: Debian's busybox-static in an OCI
# layout directory (umoci), ready for `sporectl image import DIR`.
#   scripts/demo-image.sh OUTDIR [TAG]      (default TAG: demo)
set -euo pipefail
trap 'echo "demo-image: error: line $LINENO: \"$BASH_COMMAND\" exited with $?" >&2' ERR
out=${1:?usage: demo-image.sh OUTDIR [TAG]}
tag=${2:-demo}
command -v umoci >/dev/null || { echo "demo-image: umoci is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "demo-image: /bin/busybox is missing (apt-get install busybox-static)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$out"
umoci init --layout "$out"
umoci new --image "$out:$tag"
umoci unpack --image "$out:$tag" "$work/bundle" >/dev/null
root=$work/bundle/rootfs
mkdir -p "$root"/{bin,etc,tmp,root,home/demo}
chmod 1777 "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\ndemo:x:1000:1000:demo:/home/demo:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\ndemo:x:1000:\n' > "$root/etc/group"
chown 1000:1000 "$root/home/demo"
umoci repack --image "$out:$tag" "$work/bundle" >/dev/null
umoci config --image "$out:$tag" \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.cmd /bin/sh --config.workingdir / >/dev/null
umoci gc --layout "$out"
echo "$out:$tag"
