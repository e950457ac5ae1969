#!/usr/bin/env bash
# Builds the Xen lab's boot artifacts from Debian packages (downloaded, never installed) and
# caches them; prints the artifact directory on stdout. Called by `lab.sh build` and by every
# lab.sh command that boots the lab.
#
# Inputs
#   ${SPORE_CACHE:-/var/cache/spore}/debs   .deb cache shared with kernel/build-bundle.sh; missing
#                                           packages are fetched there with `apt-get download`
#   host binaries copied into dom0          busybox (static), bash, flock, losetup, ip, and the
#                                           shared libraries they and the Xen userspace need
#   this script
# Output: ${SPORE_CACHE:-/var/cache/spore}/xenlab/<key>/ where <key> hashes the inputs, so a
# change of any input builds a new directory and an unchanged one costs a few milliseconds:
#   xen.elf              Xen 4.17, gunzipped (QEMU's -kernel loads it as multiboot)
#   vmlinux              Debian's kernel as an uncompressed ELF (dom0, and the baseline domU)
#   dom0.cpio.gz         dom0's initramfs without /init (lab.sh appends /init and the run's script)
#   guest-initrd.cpio.gz the baseline domU's busybox initramfs (guest/init)
#   root.squashfs        a small busybox tree: the baseline's root image on xvda
#   modules.boot         modules dom0 loads at boot, in dependency order (others: modprobe)
#   dom0-libs            the shared libraries in dom0 (lab.sh skips them when staging payloads)
#   info                 package versions, kernel release, sizes
set -euo pipefail
trap 'echo "xenlab build: error: line $LINENO: \"$BASH_COMMAND\" exited with $?" >&2' ERR
export LC_ALL=C

here=$(cd "$(dirname "$0")" && pwd)
cache=${SPORE_CACHE:-/var/cache/spore}
debs=$cache/debs
store=$cache/xenlab
XENVER=4.17

say() { printf 'xenlab build: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

for tool in dpkg-deb busybox cpio gzip xz mksquashfs ldd sha256sum apt-get; do
  command -v "$tool" >/dev/null || die "$tool is missing (scripts/install-deps.sh installs it)"
done
[ "$(busybox 2>&1 | head -c 7)" = BusyBox ] || die "busybox does not run"
busybox_bin=$(command -v busybox)
ldd "$busybox_bin" >/dev/null 2>&1 && die "$busybox_bin is dynamically linked; install busybox-static"

mkdir -p "$debs" "$store"
exec 9>"$store/.lock"
flock 9   # one build at a time; a second caller then finds the finished directory

# ---- packages -------------------------------------------------------------------------------
# The kernel: the same package kernel/build-bundle.sh uses (what linux-image-amd64 depends on),
# so dom0, the baseline domU and the guest bundle boot one kernel build.
kernel_pkg() {
  apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}
# apt-cache takes ~1 s: its answer is kept until apt's package lists change.
resolved=$store/kernel-pkg
if [ -n "${XENLAB_KERNEL_PKG:-}" ]; then
  kpkg=$XENLAB_KERNEL_PKG
elif [ -s "$resolved" ] && [ "$resolved" -nt /var/lib/apt/lists ]; then
  kpkg=$(cat "$resolved")
else
  kpkg=$(kernel_pkg || true)
  [ -n "$kpkg" ] && echo "$kpkg" > "$resolved"
fi
if [ -z "$kpkg" ]; then
  # apt lists may be missing on a fresh machine; offline, the newest cached kernel will do.
  kpkg=$(printf '%s\n' "$debs"/linux-image-[0-9]*-amd64_*_amd64.deb | grep -v -e -dbg_ -e '\*' | sort -V | tail -n1 || true)
  if [ -n "$kpkg" ]; then
    kpkg=$(dpkg-deb -f "$kpkg" Package)
  else
    say "apt does not know linux-image-amd64; running apt-get update"
    apt-get update -q >&2 || true
    kpkg=$(kernel_pkg || true)
  fi
fi
[ -n "$kpkg" ] || die "cannot resolve the kernel package (no linux-image-amd64 in apt, none cached in $debs)"

XEN_PKGS=("xen-hypervisor-$XENVER-amd64" "xen-utils-$XENVER" xen-utils-common xenstore-utils
  libxencall1 libxendevicemodel1 libxenevtchn1 libxenforeignmemory1 libxengnttab1 libxenhypfs1
  "libxenmisc$XENVER" libxenstore4 libxentoolcore1 libxentoollog1 libyajl2)

newest_deb() { { ls "$debs/$1"_*_amd64.deb 2>/dev/null || true; } | sort -V | tail -n1; }
missing=()
for p in "${XEN_PKGS[@]}" "$kpkg"; do [ -n "$(newest_deb "$p")" ] || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "downloading ${missing[*]} into $debs"
  dl=$(mktemp -d "$debs/.download.XXXXXX")
  chown _apt "$dl" 2>/dev/null || true   # apt downloads as _apt when it can write there
  if ! (cd "$dl" && apt-get download -q "${missing[@]}" >&2); then
    apt-get update -q >&2 || true
    (cd "$dl" && apt-get download -q "${missing[@]}" >&2) || { rm -rf "$dl"; die "apt-get download ${missing[*]} failed"; }
  fi
  mv -f "$dl"/*.deb "$debs/"   # whole files only: build-bundle.sh reads the same directory
  rmdir "$dl"
fi
kdeb=$(newest_deb "$kpkg")
xdebs=(); for p in "${XEN_PKGS[@]}"; do xdebs+=("$(newest_deb "$p")"); done

# ---- cache key --------------------------------------------------------------------------------
HOST_TOOLS=("$busybox_bin" "$(command -v bash)" "$(command -v flock)" "$(command -v losetup)" "$(command -v ip)")
key=$( {
  for d in "$kdeb" "${xdebs[@]}"; do basename "$d"; done
  sha256sum "$0" "$here/guest/init" | cut -d' ' -f1
  stat -L -c '%n %s %Y' "${HOST_TOOLS[@]}"
} | sha256sum | cut -c1-16)
out=$store/$key

# A finished build is reused while the host libraries it copied are unchanged.
if [ -f "$out/info" ] && [ -f "$out/host-files" ]; then
  mapfile -t recorded < <(cut -d' ' -f1 "$out/host-files")
  if [ "$(stat -L -c '%n %s %Y' "${recorded[@]}" 2>/dev/null)" = "$(cat "$out/host-files")" ]; then
    echo "$out"; exit 0
  fi
  say "host libraries changed since $out was built; rebuilding"
fi

t0=$EPOCHREALTIME
work=$(mktemp -d "$store/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
say "building $out (kernel $(basename "$kdeb"))"

# ---- extract ----------------------------------------------------------------------------------
mkdir -p "$work/xen" "$work/k"
for d in "${xdebs[@]}"; do dpkg-deb -x "$d" "$work/xen"; done
# Only the module directories the lab uses: the whole package is 400 MB of modules.
dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$work/k" --wildcards './boot/vmlinuz-*' \
  './lib/modules/*/modules.builtin' './lib/modules/*/modules.order' \
  './lib/modules/*/kernel/drivers/xen/*' './lib/modules/*/kernel/drivers/block/*' \
  './lib/modules/*/kernel/drivers/net/*' './lib/modules/*/kernel/drivers/virtio/*' \
  './lib/modules/*/kernel/drivers/char/*' './lib/modules/*/kernel/fs/*' \
  './lib/modules/*/kernel/net/*' './lib/modules/*/kernel/lib/*' './lib/modules/*/kernel/crypto/*'
kver=$(ls "$work/k/lib/modules")
[ "$(echo "$kver" | wc -l)" = 1 ] || die "expected one kernel release in $kdeb, found: $kver"
moddir=$work/k/lib/modules/$kver
# The package has no modules.dep (its postinst makes one); busybox depmod needs no kmod.
busybox depmod -b "$work/k" "$kver"
[ -s "$moddir/modules.dep" ] || die "depmod wrote no modules.dep for $kver"

mkdir -p "$work/out"
gunzip -c "$work/xen/boot/xen-$XENVER-amd64.gz" > "$work/out/xen.elf"

# Uncompressed ELF kernel (what scripts/extract-vmlinux does): under TCG, Xen decompressing
# an XZ bzImage for dom0 costs ~4 s, libxenguest decompressing it for a domU ~6 s.
vmlinuz=$work/k/boot/vmlinuz-$kver
# `|| true`: no match, or grep ended by SIGPIPE once head has its line, must not end the script
# silently under pipefail; the check below names the problem.
off=$({ grep -obUaP '\xfd7zXZ\x00' "$vmlinuz" || true; } | head -n1 | cut -d: -f1)
[ -n "$off" ] || die "no XZ payload in $vmlinuz"
tail -c +$((off + 1)) "$vmlinuz" | xz -dc > "$work/out/vmlinux" 2>/dev/null || true
[ "$(head -c4 "$work/out/vmlinux" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] || die "$vmlinuz: the XZ payload is not an ELF kernel"

# ---- helpers ----------------------------------------------------------------------------------
# mods ROOT NAME...: copies the modules and their dependencies (modules.dep order: dependencies
# first), decompressed, to ROOT/lib/modules/KVER, and prints their basenames in load order.
declare -A copied=()
mods() {
  local root=$1; shift
  mkdir -p "$root/lib/modules/$kver"
  local m
  for m in "$@"; do mod_one "$root" "$m"; done
}
mod_one() {
  local root=$1 name=$2 line path deps d base
  line=$(grep -m1 -E "/${name}\.ko(\.xz|\.zst|\.gz)?:" "$moddir/modules.dep") || die "module $name is not in $kver's modules.dep"
  path=${line%%:*}; deps=${line#*:}
  [ -n "${copied[$root/$path]:-}" ] && return 0
  for d in $deps; do d=${d##*/}; mod_one "$root" "${d%%.ko*}"; done
  copied[$root/$path]=1
  base=${path##*/}
  case $base in
    *.ko) cp "$moddir/$path" "$root/lib/modules/$kver/$base" ;;
    *.ko.xz) xz -dc "$moddir/$path" > "$root/lib/modules/$kver/${base%.xz}"; base=${base%.xz} ;;
    *.ko.zst) zstd -qdc "$moddir/$path" > "$root/lib/modules/$kver/${base%.zst}"; base=${base%.zst} ;;
    *.ko.gz) gzip -dc "$moddir/$path" > "$root/lib/modules/$kver/${base%.gz}"; base=${base%.gz} ;;
  esac
  echo "${base%.ko}"
}

busybox_tree() {
  local root=$1 a
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/lib/x86_64-linux-gnu,usr/lib64,dev,proc,sys,run,tmp,etc,root,mnt}
  ln -s usr/lib "$root/lib"; ln -s usr/lib64 "$root/lib64"
  cp "$busybox_bin" "$root/bin/busybox"
  for a in $("$busybox_bin" --list); do
    [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"
  done
  chmod 1777 "$root/tmp"
}

# ---- dom0 root --------------------------------------------------------------------------------
R=$work/dom0
busybox_tree "$R"
# The Xen userspace without docs, python (pygrub), HVM firmware, the EFI binary and the
# squashfs-tools (not part of these packages' dependencies anyway).
(cd "$work/xen" && tar -cf - --exclude=./usr/share/doc --exclude=./usr/share/man \
  --exclude=./usr/share/lintian --exclude=./usr/share/bug --exclude=./boot \
  --exclude="./usr/lib/xen-$XENVER/boot" --exclude="./usr/lib/xen-$XENVER/lib/python" \
  --exclude=./usr/lib/python3 --exclude=./usr/share/python3 --exclude=./etc/init.d .) | tar -xf - -C "$R"
# busybox lacks flock and `mountpoint`-grade tools the hotplug scripts use; its losetup and ip
# differ from util-linux/iproute2 (vif-route's `ip -4 -o addr show primary dev X` fails).
# busybox has ip and losetup applets in /bin: remove the links first (cp would follow them
# and overwrite busybox), then the real tools take their place in every PATH order.
rm -f "$R/bin/bash" "$R/bin/ip" "$R/bin/losetup" "$R/bin/flock"
cp "$(command -v bash)" "$R/bin/bash"
cp "$(command -v flock)" "$R/usr/bin/flock"
cp "$(command -v losetup)" "$R/usr/sbin/losetup"; ln -s ../usr/sbin/losetup "$R/bin/losetup"
cp "$(command -v ip)" "$R/usr/sbin/ip"; ln -s ../usr/sbin/ip "$R/bin/ip"

# Shared libraries of everything dynamic in dom0, from the host (the Xen ones are in the tree).
xenlibs=$R/usr/lib/x86_64-linux-gnu
elfs=()
while IFS= read -r -d '' f; do
  [ "$(head -c4 "$f" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] && elfs+=("$f")
done < <(find "$R/usr" "$R/bin" -type f -perm -u+x -print0)
elfs+=("$xenlibs"/*.so.* "$R/usr/lib/xen-$XENVER/lib/x86_64-linux-gnu"/*.so.*)
: > "$work/host-libs"
for f in "${elfs[@]}"; do
  LD_LIBRARY_PATH=$xenlibs:$R/usr/lib/xen-$XENVER/lib/x86_64-linux-gnu ldd "$f" 2>/dev/null |
    awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\/lib64\// {print $1}' >> "$work/host-libs" || true
done
# glibc dlopen()s libgcc_s for pthread_cancel: ldd does not show it, and xl aborts without it
# after the domain already exists.
echo /usr/lib/x86_64-linux-gnu/libgcc_s.so.1 >> "$work/host-libs"
: > "$work/host-files"
for lib in $(sort -u "$work/host-libs"); do
  case $lib in "$work"/*) continue ;; esac
  case $lib in
    /lib64/*|/usr/lib64/*) cp -L "$lib" "$R/usr/lib64/" ;;
    *) [ -e "$xenlibs/${lib##*/}" ] || cp -L "$lib" "$xenlibs/" ;;
  esac
  echo "$lib" >> "$work/host-files.list"
done
printf '%s\n' "${HOST_TOOLS[@]}" >> "$work/host-files.list"
mapfile -t host_files < <(sort -u "$work/host-files.list")
stat -L -c '%n %s %Y' "${host_files[@]}" > "$work/host-files"
[ -e "$R/usr/lib64/ld-linux-x86-64.so.2" ] || die "the dynamic loader was not found by ldd"

# Modules: the boot set (loaded by dom0's init, dependencies first) and a few on demand.
BOOT_MODULES=(virtio_pci virtio-rng xen-privcmd xen-evtchn xen-gntdev xen-gntalloc xenfs
  9pnet_virtio 9p loop xen-blkback xen-netback squashfs overlay tun bridge)
EXTRA_MODULES=(virtio_blk virtio_net virtio_console crc32c_generic ext4 erofs)
mods "$R" "${BOOT_MODULES[@]}" > "$work/out/modules.boot"
mods "$R" "${EXTRA_MODULES[@]}" > /dev/null
cp "$moddir/modules.builtin" "$moddir/modules.order" "$R/lib/modules/$kver/"
busybox depmod -b "$R" "$kver"   # for `modprobe NAME` in dom0 scripts
mkdir -p "$R/etc/xenlab"
cp "$work/out/modules.boot" "$R/etc/xenlab/modules.boot"

# Everything dom0's init would otherwise create with one fork each (40-65 ms apiece under TCG):
# /run lives in the initramfs (itself a tmpfs), one `mount -a` mounts the pseudo-filesystems,
# one `cp -a` puts the links devtmpfs lacks into /dev (/dev/stdin: hotplug's locking.sh spins
# forever without it).
mkdir -p "$R"/var/{lib/xen,log/xen/console,lib/xenstored} "$R"/etc/xen/auto "$R/proc/xen" "$R/payload" "$R/xenlab/share"
mkdir -p "$R"/run/{lock,xen,xenstored,lab}
ln -sfn /run "$R/var/run"; ln -sfn /run/lock "$R/var/lock"
printf '%s\n' 'proc /proc proc defaults 0 0' 'sysfs /sys sysfs defaults 0 0' 'devtmpfs /dev devtmpfs defaults 0 0' > "$R/etc/fstab"
mkdir -p "$R"/etc/xenlab/dev/{pts,shm}
ln -s /proc/self/fd "$R/etc/xenlab/dev/fd"
for i in 0:stdin 1:stdout 2:stderr; do ln -s "/proc/self/fd/${i%%:*}" "$R/etc/xenlab/dev/${i#*:}"; done
printf 'root:x:0:0:root:/root:/bin/bash\n' > "$R/etc/passwd"
printf 'root:x:0:\n' > "$R/etc/group"
printf '127.0.0.1 localhost\n::1 localhost\n' > "$R/etc/hosts"
printf 'hosts: files\npasswd: files\ngroup: files\n' > "$R/etc/nsswitch.conf"
(cd "$R" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > "$work/dom0.cpio"
# gzip -1: 20 MB -> 8 MB, decompressed by dom0 in well under a second. Padded to 512 bytes so
# lab.sh can append the run's own (uncompressed) cpio archive after it.
gzip -1 -n -c "$work/dom0.cpio" > "$work/out/dom0.cpio.gz"
pad=$(( (512 - $(stat -c %s "$work/out/dom0.cpio.gz") % 512) % 512 ))
head -c "$pad" /dev/zero >> "$work/out/dom0.cpio.gz"
(cd "$R/usr/lib/x86_64-linux-gnu" && ls) > "$work/out/dom0-libs"

# ---- baseline domU: busybox initramfs and root image ------------------------------------------
G=$work/guest
busybox_tree "$G"
mods "$G" xen-blkfront xen-netfront squashfs > "$G/etc/modules.order"
cp "$here/guest/init" "$G/init"; chmod 0755 "$G/init"
(cd "$G" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -1 -n) > "$work/out/guest-initrd.cpio.gz"
S=$work/rootimg
busybox_tree "$S"
echo "xenlab baseline root image ($kver)" > "$S/etc/xenlab-root"
mksquashfs "$S" "$work/out/root.squashfs" -quiet -noappend -comp gzip -all-root >/dev/null

# ---- finish -------------------------------------------------------------------------------------
cp "$work/host-files" "$work/out/host-files"
{
  echo "kernel_release=$kver"
  echo "kernel_deb=$(basename "$kdeb")"
  for d in "${xdebs[@]}"; do echo "xen_deb=$(basename "$d")"; done
  echo "dom0_modules=$(tr '\n' ' ' < "$work/out/modules.boot")"
  for f in xen.elf vmlinux dom0.cpio.gz guest-initrd.cpio.gz root.squashfs; do
    echo "size_$f=$(stat -c %s "$work/out/$f")"
  done
  echo "dom0_rootfs_bytes=$(stat -c %s "$work/dom0.cpio")"
  echo "build_ms=$(( (${EPOCHREALTIME/./} - ${t0/./}) / 1000 ))"
} > "$work/out/info"
rm -rf "$out"
mv "$work/out" "$out"
# Older builds are garbage once a newer one exists; keep the newest two for a quick switch back.
ls -1dt "$store"/*/ 2>/dev/null | tail -n +3 | while read -r old; do rm -rf "$old"; done
say "done in $(( (${EPOCHREALTIME/./} - ${t0/./}) / 1000 )) ms: $out"
echo "$out"
