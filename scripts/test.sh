#!/usr/bin/env bash
# spore's test command (the README's second command; .ci/run calls exactly this).
# Installs what the tests need, then runs every suite against real components: a local
# registry, QEMU (TCG), the Xen lab. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

step() { printf '\n==> %s (%s)\n' "$*" "$(date +%T)"; }

step "dependencies"
scripts/install-deps.sh

step "format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "guest bundle (kernel/build-bundle.sh -> target/guest)"
kernel/build-bundle.sh

step "workspace tests"
# The QEMU suites boot real zones under TCG: nextest runs them in parallel on every core.
cargo nextest run --workspace --locked --no-fail-fast

step "Xen lab selftest (xenlab/lab.sh selftest)"
# Real Xen 4.17 + dom0 under QEMU TCG: Xen devices, xenstored, xl list, payloads in, results out.
# 37-69 s cold here (75 MB of .debs, build, boot), ~12 s warm; artifacts cached across runs.
xenlab/lab.sh selftest

step "done"
