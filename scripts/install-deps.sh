#!/usr/bin/env bash
# Installs everything spore needs to build, test and run on a fresh Debian 12 (as root):
# Debian packages, the musl target for spore-init, and the Python client's test packages.
# Idempotent; quick when everything is already there.
set -euo pipefail
trap 'echo "install-deps: error: line $LINENO: \"$BASH_COMMAND\" exited with $?" >&2' ERR
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  # build
  protobuf-compiler libprotobuf-dev pkg-config libssl-dev gcc
  # images: local registry and the peer tools used by tests and benchmarks
  docker-registry umoci skopeo squashfs-tools erofs-utils
  # guest bundle, QEMU backend, Xen lab
  qemu-system-x86 busybox-static cpio e2fsprogs xz-utils zstd lz4 gzip dpkg apt
  # static (musl) builds of binaries with C dependencies, e.g. the Xen lab driver
  musl-tools
  # tests and benchmarks
  time iproute2 util-linux procps socat
  # sporenet's benchmark peers and load (bench/net/tcp.py): pasta (passt), slirp4netns, iperf3,
  # sockperf; its netns tests use busybox's ping from busybox-static above
  passt slirp4netns iperf3 sockperf
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# spore-init is a static binary: musl when rustup can add the target, else glibc +crt-static
# (scripts/build-guest.sh picks whichever is present).
if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
  rustup target add x86_64-unknown-linux-musl || echo "install-deps: musl target unavailable; spore-init will be built with glibc +crt-static"
fi

command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

# The Python client test generates its code from proto/ with grpcio-tools.
VENV=.cache/venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import grpc, grpc_tools' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check grpcio grpcio-tools
fi
