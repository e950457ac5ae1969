#!/usr/bin/env bash
# Builds the guest bundle every zone boots: Debian's kernel, an initrd with spore-init as /init
# and the modules a zone needs, and a manifest.
#
#   kernel/build-bundle.sh [OUTDIR]        # default OUTDIR: target/guest
#   kernel/build-bundle.sh /var/lib/spore/guest   # where spored looks by default
#
# Output (docs/guest.md has the details):
#   kernel         Debian's bzImage, byte for byte (Xen PV and QEMU boot it)
#   vmlinux        the same kernel as an uncompressed ELF (with the PVH and Xen notes): no
#                  decompression in the guest, seconds faster under TCG; QEMU and Xen load it
#   initrd         uncompressed newc cpio: /init, /modules/*.ko, /modules/order
#   manifest.json  kernel version, module load order, size and sha256 of every file
#
# Inputs: the kernel package `linux-image-amd64` depends on, fetched with `apt-get download`
# into ${SPORE_CACHE:-/var/cache/spore}/debs (kept across builds and clones; the Xen lab uses
# the same cache). Set SPORE_KERNEL_DEB=/path/to.deb to use a given package instead.
# Nothing is installed on the host. Same inputs give identical output bytes.
set -euo pipefail
trap 'echo "build-bundle: error: line $LINENO: \"$BASH_COMMAND\" exited with $?" >&2' ERR
export LC_ALL=C
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo/target/guest}
cache=${SPORE_CACHE:-/var/cache/spore}/debs

# What a zone needs: block and net frontends for Xen and virtio (virtio_mmio is the transport of
# QEMU's microvm machine), the virtio console (hvc0/hvc1 under QEMU; Xen's hvc is built in),
# the image filesystems and overlayfs. Dependencies come from modules.dep. crc32c_generic comes
# before erofs: erofs needs libcrc32c, whose init asks the crypto API for "crc32c" (a softdep that
# modules.dep does not list); without a crc32c module loaded first libcrc32c and erofs fail.
MODULES=(xen-blkfront xen-netfront virtio_mmio virtio_blk virtio_net virtio_console squashfs crc32c_generic erofs overlay)

say() { printf 'build-bundle: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

for tool in dpkg-deb busybox cpio sha256sum; do
  command -v "$tool" >/dev/null || die "$tool is missing (scripts/install-deps.sh installs it)"
done

# --- the kernel package ---------------------------------------------------------------------
find_deb() {
  local pkg=$1
  # An empty cache is the normal first run: no match is not an error (pipefail would make it one).
  { ls "$cache/${pkg}"_*_amd64.deb 2>/dev/null || true; } | sort -V | tail -n1
}

deb=${SPORE_KERNEL_DEB:-}
if [ -z "$deb" ]; then
  mkdir -p "$cache"
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}' || true)
  if [ -z "$pkg" ]; then
    say "apt does not know linux-image-amd64 yet; running apt-get update"
    apt-get update -q >&2 || true
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}' || true)
  fi
  if [ -n "$pkg" ]; then
    deb=$(find_deb "$pkg")
    if [ -z "$deb" ]; then
      say "downloading $pkg into $cache"
      (cd "$cache" && apt-get download -q "$pkg" >&2) || die "apt-get download $pkg failed"
      deb=$(find_deb "$pkg")
    fi
  else
    # Offline: fall back to the newest kernel package already in the cache.
    deb=$(ls "$cache"/linux-image-*-amd64_*_amd64.deb 2>/dev/null | grep -v -- '-dbg_' | sort -V | tail -n1 || true)
  fi
fi
[ -n "$deb" ] && [ -f "$deb" ] || die "no kernel package: apt cannot resolve linux-image-amd64 and $cache has none"
say "kernel package $(basename "$deb")"

work=$(mktemp -d /tmp/spore-bundle.XXXXXX)
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$deb" "$work/pkg"
kver=$(ls "$work/pkg/lib/modules")
[ "$(echo "$kver" | wc -l)" = 1 ] || die "expected one kernel version in $deb, found: $kver"
vmlinuz="$work/pkg/boot/vmlinuz-$kver"
[ -f "$vmlinuz" ] || die "$deb has no boot/vmlinuz-$kver"
moddir="$work/pkg/lib/modules/$kver"

# The package ships no modules.dep; busybox's depmod writes one (the host may have no kmod).
busybox depmod -b "$work/pkg" "$kver"
[ -s "$moddir/modules.dep" ] || die "depmod produced no modules.dep"

# --- module closure in load order -----------------------------------------------------------
declare -A emitted=()
order=()
norm() { local n=${1##*/}; n=${n%%.ko*}; echo "${n//-/_}"; }
dep_line() { # the modules.dep line of module $1 (normalised name)
  awk -v want="$1" -F: '{ n=$1; sub(/.*\//, "", n); sub(/\.ko.*/, "", n); gsub(/-/, "_", n); if (n == want) { print; exit } }' "$moddir/modules.dep"
}
visit() {
  local name; name=$(norm "$1")
  [ -n "${emitted[$name]:-}" ] && return
  local line; line=$(dep_line "$name")
  if [ -z "$line" ]; then
    if grep -q "/$1.ko\$\|/${1//_/-}.ko\$\|/${1//-/_}.ko\$" "$moddir/modules.builtin"; then
      say "$1 is built into the kernel"; emitted[$name]=builtin; return
    fi
    die "module $1 is neither in modules.dep nor built in"
  fi
  local path=${line%%:*} deps=${line#*:} d
  # modules.dep lists the full closure; visiting each dependency first gives a valid order.
  for d in $deps; do visit "$(norm "$d")"; done
  emitted[$name]=$path
  order+=("$path")
}
for m in "${MODULES[@]}"; do visit "$m"; done

# --- the initrd tree ------------------------------------------------------------------------
root="$work/root"
mkdir -p "$root/modules" "$root/dev" "$root/proc" "$root/sys"
: > "$root/modules/order"
for path in "${order[@]}"; do
  src="$moddir/$path"
  base=$(basename "$path")
  case "$base" in
    *.ko) cp "$src" "$root/modules/$base" ;;
    *.ko.xz) xz -dc "$src" > "$root/modules/${base%.xz}"; base=${base%.xz} ;;
    *.ko.zst) zstd -qdc "$src" > "$root/modules/${base%.zst}"; base=${base%.zst} ;;
    *.ko.gz) gzip -dc "$src" > "$root/modules/${base%.gz}"; base=${base%.gz} ;;
    *) die "unexpected module file $path" ;;
  esac
  echo "$base" >> "$root/modules/order"
done
say "modules (load order): $(tr '\n' ' ' < "$root/modules/order")"

# /dev/null must exist before /init runs: under QEMU hvc0 appears only once spore-init loads
# virtio_console, so the kernel starts /init without stdin/stdout/stderr, and Rust's runtime
# then opens /dev/null for them (and aborts if it cannot). The kernel's built-in initramfs
# provides /dev/console only.
mknod -m 0666 "$root/dev/null" c 1 3 || die "cannot create the /dev/null node for the initrd (run as root)"

init_bin=$("$repo/scripts/build-guest.sh")
cp "$init_bin" "$root/init"

# Reproducible archive: fixed owner, modes and mtimes, sorted names, no inode/device numbers.
find "$root" -type d -exec chmod 0755 {} +
find "$root" -type f -exec chmod 0644 {} +
chmod 0666 "$root/dev/null"
chmod 0755 "$root/init"
find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . -mindepth 1 | sed 's|^\./||' | sort | cpio -o -H newc -R 0:0 --reproducible --quiet) > "$work/initrd"

# --- the uncompressed kernel ----------------------------------------------------------------
# Like the kernel's scripts/extract-vmlinux: find the payload's compression magic, decompress
# from there, keep the result if it is an ELF file.
extract_vmlinux() {
  local img=$1 dst=$2 magic cmd off
  for pair in 'fd377a585a00:xz -dc' '28b52ffd:zstd -qdc' '1f8b0800:gzip -dc'; do
    magic=${pair%%:*}; cmd=${pair#*:}
    local pat; pat=$(echo "$magic" | sed 's/../\\x&/g')
    for off in $(grep -obUaP "$pat" "$img" | cut -d: -f1); do
      if tail -c +$((off + 1)) "$img" | $cmd > "$dst" 2>/dev/null || [ -s "$dst" ]; then
        [ "$(head -c 4 "$dst" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] && return 0
      fi
    done
  done
  return 1
}
extract_vmlinux "$vmlinuz" "$work/vmlinux" || die "cannot find the compressed ELF payload in $vmlinuz"

# --- manifest and install -------------------------------------------------------------------
pkg_version=$(dpkg-deb -f "$deb" Version)
pkg_name=$(dpkg-deb -f "$deb" Package)
cp "$vmlinuz" "$work/kernel"
cp "$init_bin" "$work/spore-init"
{
  printf '{\n  "format": 1,\n  "kernel_version": "%s",\n' "$kver"
  printf '  "kernel_package": "%s",\n  "kernel_package_version": "%s",\n' "$pkg_name" "$pkg_version"
  printf '  "modules": ['
  sep=''
  while read -r m; do printf '%s"%s"' "$sep" "$m"; sep=', '; done < "$root/modules/order"
  printf '],\n  "files": {\n'
  sep=''
  for f in kernel vmlinux initrd spore-init; do
    printf '%s    "%s": { "size": %s, "sha256": "%s" }' "$sep" "$f" \
      "$(stat -c %s "$work/$f")" "$(sha256sum "$work/$f" | cut -d' ' -f1)"
    sep=$',\n'
  done
  printf '\n  }\n}\n'
} > "$work/manifest.json"

mkdir -p "$out"
for f in kernel vmlinux initrd spore-init manifest.json; do
  # Replace each file atomically so a running spored never reads half a file.
  cp "$work/$f" "$out/.$f.new"
  mv -f "$out/.$f.new" "$out/$f"
done
say "wrote $out: kernel $kver, initrd $(stat -c %s "$out/initrd") bytes, spore-init $(stat -c %s "$out/spore-init") bytes"
