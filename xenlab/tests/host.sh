# shellcheck shell=bash
# Shared by the host sides of the lab tests (backend.sh, spored.sh): `. xenlab/tests/host.sh`
# with $repo set to the checkout.

# guest_bundle: prints the guest bundle's directory (SPORE_GUEST_DIR, default target/guest),
# building it there first when any of its files is missing.
guest_bundle() {
  local dir=${SPORE_GUEST_DIR:-$repo/target/guest} f
  for f in kernel vmlinux initrd; do
    if [ ! -f "$dir/$f" ]; then
      printf 'building the guest bundle into %s\n' "$dir" >&2
      "$repo/kernel/build-bundle.sh" "$dir" >&2 || return 1
      break
    fi
  done
  echo "$dir"
}

# stage_lab DIR DOM0_SCRIPT: copies the lab tool into DIR/lab and DOM0_SCRIPT into DIR. bash
# reads a script as it runs it: copies keep an edit of the checkout from breaking a run that
# takes minutes.
stage_lab() {
  mkdir -p "$1/lab"
  cp -r "$repo/xenlab/lab.sh" "$repo/xenlab/build.sh" "$repo/xenlab/dom0" "$repo/xenlab/guest" "$1/lab/"
  cp "$2" "$1/"
}
