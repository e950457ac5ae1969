#!/usr/bin/env bash
# Builds spore-init (the guest's PID 1) as a static binary with the size-tuned `guest` profile
# and prints the path of the result on stdout (build output goes to stderr).
#
#   scripts/build-guest.sh            # musl if the target is installed, else glibc +crt-static
#   SPORE_GUEST_TARGET=x86_64-unknown-linux-gnu scripts/build-guest.sh   # force one
set -euo pipefail
trap 'echo "build-guest: error: line $LINENO: \"$BASH_COMMAND\" exited with $?" >&2' ERR
cd "$(dirname "$0")/.."

target=${SPORE_GUEST_TARGET:-}
if [ -z "$target" ]; then
  if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    target=x86_64-unknown-linux-musl
  else
    echo "build-guest: musl target not installed (rustup target add x86_64-unknown-linux-musl);" \
      "building a static glibc binary instead" >&2
    target=x86_64-unknown-linux-gnu
  fi
fi

# musl links statically by default; glibc needs crt-static. Either way no dynamic loader is
# needed inside the initrd. RUSTFLAGS is scoped to this build via the target-specific variable,
# so the build scripts (run on the host) are unaffected.
flags_var="CARGO_TARGET_$(echo "$target" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"
export "$flags_var"="-C target-feature=+crt-static ${!flags_var:-}"

cargo build --locked --profile guest --target "$target" -p spore-init --bin spore-init >&2
bin="target/$target/guest/spore-init"
file_type=$(head -c 4 "$bin" | od -An -tx1 | tr -d ' ')
[ "$file_type" = "7f454c46" ] || { echo "build-guest: $bin is not an ELF file" >&2; exit 1; }
echo "$PWD/$bin"
