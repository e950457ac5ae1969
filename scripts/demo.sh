#!/usr/bin/env bash
# spore's main job on a fresh Debian 12 machine (the README's first command), as root:
# installs what is needed, builds spore and the guest bundle, starts spored, imports a demo
# image built from busybox-static (no Docker Hub needed) and runs a zone that prints a greeting.
#
# spored keeps running afterwards (its log: /var/log/spored-demo.log); try
#   target/release/sporectl zone launch --rm --attach demo sh -c 'uname -a; cat /etc/os-release'
# and stop it with: kill "$(cat /var/lib/spore/spored.lock)"
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
step() { current=$*; printf '\n==> %s\n' "$*"; }
current="start"
# Fail loudly, naming the step: set -e alone would end the demo with no word of where.
trap 'rc=$?; printf "\ndemo: FAILED in step \"%s\": %s exited with %s\n" "$current" "$BASH_COMMAND" "$rc" >&2' ERR

[ "$(id -u)" = 0 ] || { echo "demo: run as root (spored creates VMs, loop devices and /run/spore)" >&2; exit 1; }

step "installing dependencies"
scripts/install-deps.sh

step "building spored and sporectl (release)"
cargo build --locked --release -p spored -p sporectl
sporectl=$repo/target/release/sporectl

step "building the guest bundle (Debian kernel + initrd with spore-init)"
kernel/build-bundle.sh /var/lib/spore/guest

socket=/run/spore/spored.sock
if ! "$sporectl" --socket "$socket" host status >/dev/null 2>&1; then
  step "starting spored (log: /var/log/spored-demo.log)"
  setsid "$repo/target/release/spored" --socket "$socket" </dev/null >>/var/log/spored-demo.log 2>&1 &
  for _ in $(seq 100); do
    "$sporectl" --socket "$socket" host status >/dev/null 2>&1 && break
    sleep 0.1
  done
fi
"$sporectl" --socket "$socket" host status

step "importing the demo image (busybox-static, built locally with umoci)"
layout=$(mktemp -d /tmp/spore-demo-image.XXXXXX)
trap 'rm -rf "$layout"' EXIT
scripts/demo-image.sh "$layout/oci" demo >/dev/null
"$sporectl" --socket "$socket" image import --tag demo "$layout/oci"

step "launching a zone"
"$sporectl" --socket "$socket" zone launch --rm --attach demo \
  sh -c 'echo "Hello from spore zone $(hostname): $(uname -sr), $(nproc) vCPU, $(free -m | awk "/Mem:/{print \$2}") MiB"'
