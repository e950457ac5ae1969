#!/usr/bin/env bash
# spore's test command (the README's second command; .ci/run calls exactly this).
# Installs what the tests need, then runs every suite against real components: a local
# registry, QEMU (TCG), the Xen lab. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

step() { current=$*; printf '\n==> %s (%s)\n' "$*" "$(date +%T)"; }
current="start"
# Fail loudly, naming the step: set -e alone would end the run with no word of where.
trap 'rc=$?; printf "\ntest.sh: FAILED in step \"%s\": %s exited with %s\n" "$current" "$BASH_COMMAND" "$rc" >&2' ERR
scratch=$(mktemp -d /tmp/spore-test.XXXXXX)
# Inherited by everything the tests start (spored, QEMU): how the leak check below knows them.
export SPORE_TEST_RUN="test.sh-$$-$(date +%s)"
trap 'rm -rf "$scratch"' EXIT

step "dependencies"
scripts/install-deps.sh

step "format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "fuzz targets build"
# Each fuzz crate is a workspace of its own (cargo-fuzz wants nightly flags), so nothing else
# compiles them: check them here so they cannot rot. One target dir: libFuzzer builds once.
for manifest in crates/*/fuzz/Cargo.toml network/fuzz/Cargo.toml; do
  [ -f "$manifest" ] || continue
  CARGO_TARGET_DIR=target/fuzz-check cargo check --quiet --manifest-path "$manifest" --bins
done

step "guest bundle from an empty package cache (kernel/build-bundle.sh -> target/guest)"
# A new machine has no /var/cache/spore: build the bundle the way it does, downloading the
# kernel package into an empty cache, so CI takes the path a new user takes.
SPORE_CACHE=$scratch/cache kernel/build-bundle.sh

step "workspace tests"
# The QEMU suites boot real zones under TCG: nextest runs them in parallel on every core.
cargo nextest run --workspace --locked --no-fail-fast

step "nothing left running by the tests"
# Zone QEMUs run in sessions of their own; the suites end theirs even when a test fails or
# times out (spore-testkit's Reaper). A survivor is a leak: name it, end it, fail. This run's
# QEMUs are told apart from anyone else's by the marker they inherit in their environment.
left=()
for pid in $(pgrep -f qemu-system-x86_64 || true); do
  if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "SPORE_TEST_RUN=$SPORE_TEST_RUN"; then
    left+=("$pid")
  fi
done
if [ "${#left[@]}" -gt 0 ]; then
  echo "test.sh: QEMU processes left behind by the tests:" >&2
  ps -o pid=,args= -p "$(IFS=,; echo "${left[*]}")" >&2 || true
  kill -9 "${left[@]}" 2>/dev/null || true
  false
fi

step "Xen lab selftest (xenlab/lab.sh selftest)"
# Real Xen 4.17 + dom0 under QEMU TCG: Xen devices, xenstored, xl list, payloads in, results out.
# 37-69 s cold here (75 MB of .debs, build, boot), ~12 s warm; artifacts cached across runs.
xenlab/lab.sh selftest

step "Xen backend in the lab (xenlab/tests/backend.sh 1)"
# The backend's lab driver against the real hypervisor: zones, consoles, IDM, exit codes,
# re-adoption, destroy, stop reasons, with xl/xenstore-ls/losetup checking what is left; one
# timed zone and one `xl create` of the same kernel and devices. ~3 min warm, ~9 min cold.
xenlab/tests/backend.sh 1

step "spored on Xen in the lab (xenlab/tests/spored.sh)"
# The real spored and sporectl in dom0: the demo image, output and exit codes, a signal death,
# three zones at once, destroy leaving nothing, a spored restart re-adopting a running zone.
# ~2.5-3.5 min.
xenlab/tests/spored.sh

step "done"
