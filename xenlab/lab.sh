#!/usr/bin/env bash
# The Xen lab: the real Xen 4.17 hypervisor with a Debian PV dom0, inside QEMU (TCG).
#
# usage: xenlab/lab.sh COMMAND [OPTIONS]
#   build                  build (or find cached) the boot artifacts; prints their directory
#   run [--payload HOSTPATH[:NAME]]... [--results DIR] [--timeout S] [--mem MiB] SCRIPT [ARGS...]
#                          boot Xen + dom0, run SCRIPT (a host file) inside dom0 with ARGS, power
#                          off. SCRIPT's stdout/stderr become this command's, its exit code this
#                          command's exit code. In dom0: payloads under /payload/NAME (read-only;
#                          NAME defaults to the basename; directories allowed), files written
#                          to /results are copied to --results DIR when the run ends (also on
#                          failure), cwd is /run/lab (tmpfs), $XENLAB_LIB has helpers
#                          (lab_xenconsoled, lab_sleep, lab_wait_for, ...), /payload is on PATH.
#                          Dynamic host binaries work: their libraries are staged too.
#                          Defaults: --timeout 600, --mem 2048 (the machine: dom0 gets 512).
#   selftest               boot the lab and check /dev/xen/{privcmd,evtchn,gntdev}, xenstored,
#                          `xl list` (Domain-0), payload in, results and output out, exit codes
#   xl-baseline [--kernel K] [--initrd I] [--disk IMG] [--vif] [--runs N]
#                          the reference toolstack (comparison only): `xl create` of PV guests,
#                          N (3) runs each in one boot, timings printed. Always the Debian kernel
#                          with a busybox initrd; also K/I (default: target/guest's vmlinux and
#                          initrd when they exist) with a root image on xvda (IMG, default a small
#                          squashfs) and a vif on a bridge (default with target/guest).
#   help                   this text
#
# Exit codes of run/selftest/xl-baseline: the script's, else 124 (timeout: the serial log's
# tail is printed) or 125 (the lab failed: build, boot or dom0 setup; the log's tail printed).
# Every run keeps its serial log (Xen + dom0 console, host timestamps) in
# $XENLAB_RUNS/<run>/serial.log (default /tmp/xenlab/runs; the newest 20 runs are kept), with
# qemu.cmd and share/ctl/{stdout,stderr,rc,dmesg} (dom0's kernel log) beside it.
#
# Environment: SPORE_CACHE (default /var/cache/spore: debs/ shared with kernel/build-bundle.sh,
# xenlab/ the cached artifacts), XENLAB_RUNS, XENLAB_SMP (2), XENLAB_DOM0_MEM (512 MiB),
# XENLAB_XEN_ARGS / XENLAB_DOM0_ARGS (extra Xen / dom0 kernel command-line words),
# XENLAB_QUIET=1 (no timing line on stderr). docs/xenlab.md has the details.
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)

say() { printf 'xenlab: %s\n' "$*" >&2; }
die() {
  say "error: $*"
  # A run that never booted leaves nothing behind.
  if [ -n "${run:-}" ] && [ ! -e "$run/serial.log" ]; then rm -rf "$run"; fi
  exit 125
}
run=
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

main() {
  local cmd=${1:-help}
  [ $# -gt 0 ] && shift
  case $cmd in
    build) "$here/build.sh" ;;
    run) cmd_run "$@" ;;
    selftest) cmd_selftest "$@" ;;
    xl-baseline) cmd_xl_baseline "$@" ;;
    help|-h|--help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

# ---- run --------------------------------------------------------------------------------------
payloads=()
results=
timeout_s=600
mem_mib=2048
script=
script_args=()

parse_run() {
  while [ $# -gt 0 ]; do
    case $1 in
      --payload) [ $# -ge 2 ] || die "--payload needs HOSTPATH[:NAME]"; payloads+=("$2"); shift 2 ;;
      --results) [ $# -ge 2 ] || die "--results needs a directory"; results=$2; shift 2 ;;
      --timeout) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--timeout needs whole seconds"; timeout_s=$2; shift 2 ;;
      --mem) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--mem needs MiB"; mem_mib=$2; shift 2 ;;
      --) shift; break ;;
      -*) die "unknown option $1 (lab.sh help)" ;;
      *) break ;;
    esac
  done
  [ $# -ge 1 ] || die "run needs a SCRIPT (lab.sh help)"
  script=$1; shift
  script_args=("$@")
  [ -f "$script" ] || die "script $script does not exist"
  local dom0=${XENLAB_DOM0_MEM:-512}
  [ "$mem_mib" -ge $((dom0 + 128)) ] || die "--mem $mem_mib leaves no room for guests next to dom0's $dom0 MiB"
}

cmd_run() {
  parse_run "$@"
  command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is missing (scripts/install-deps.sh installs it)"
  art=$("$here/build.sh") || die "building the lab's artifacts failed"

  local runs=${XENLAB_RUNS:-/tmp/xenlab/runs}
  mkdir -p "$runs"
  run=$(mktemp -d "$runs/$(date +%Y%m%d-%H%M%S).XXXX")
  mkdir -p "$run/payload/.libs" "$run/share/ctl" "$run/share/results" "$run/lab/xenlab"
  : > "$run/share/ctl/stdout"; : > "$run/share/ctl/stderr"
  if [ -n "$results" ]; then mkdir -p "$results"; results=$(cd "$results" && pwd); fi
  local p
  for p in ${payloads[@]+"${payloads[@]}"}; do stage_payload "$p"; done

  # The run's own archive, appended to the cached initramfs (the kernel unpacks both).
  cp "$here/dom0/init" "$here/dom0/lib.sh" "$run/lab/xenlab/"
  cp "$script" "$run/lab/xenlab/script"
  chmod 0755 "$run/lab/xenlab/init" "$run/lab/xenlab/script"
  ln -s xenlab/init "$run/lab/init"
  ln -s xenlab/share/results "$run/lab/results"
  ln -s share/ctl "$run/lab/xenlab/ctl"
  printf '%s\0' ${script_args[@]+"${script_args[@]}"} > "$run/lab/xenlab/args"
  (cd "$run/lab" && find . -mindepth 1 | cpio -o -H newc -R 0:0 --quiet) > "$run/lab.cpio"
  cat "$art/dom0.cpio.gz" "$run/lab.cpio" > "$run/dom0-initrd"

  boot
}

# stage_payload HOSTPATH[:NAME]: hard-links (else copies) the payload into the run's share, and
# stages the shared libraries of its dynamic executables that dom0 does not have.
stage_payload() {
  local spec=$1 src name
  src=${spec%%:*}
  if [ "$src" != "$spec" ]; then name=${spec#*:}; else name=$(basename "$src"); fi
  [ -e "$src" ] || die "payload $src does not exist"
  case /$name/ in
    //|*/../*|*/./*|/.libs/*) die "payload name '$name' must be a relative path without . or .. (and not .libs)" ;;
  esac
  local dst=$run/payload/$name
  [ -e "$dst" ] && die "two payloads are named $name"
  mkdir -p "$(dirname "$dst")"
  if [ -d "$src" ]; then
    cp -al "$src" "$dst" 2>/dev/null || { rm -rf "$dst"; cp -a "$src" "$dst"; }
  else
    ln "$src" "$dst" 2>/dev/null || cp -a "$src" "$dst"
  fi
  local f lib
  while IFS= read -r -d '' f; do
    [ "$(head -c4 "$f" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] || continue
    local out; out=$(ldd "$f" 2>/dev/null) || continue   # static: nothing to stage
    if grep -q 'not found' <<<"$out"; then
      die "payload $f needs libraries the host lacks: $(grep 'not found' <<<"$out" | tr -s ' \t\n' ' ')"
    fi
    for lib in $(awk '$2 == "=>" && $3 ~ /^\// {print $3}' <<<"$out"); do
      grep -qxF "${lib##*/}" "$art/dom0-libs" || cp -nL "$lib" "$run/payload/.libs/"
    done
  done < <(find "$dst" -type f -perm -u+x -print0)
}

tails=()
cleanup() {
  if [ -s "$run/qemu.pid" ]; then kill "$(cat "$run/qemu.pid")" 2>/dev/null || true; fi
  if [ ${#tails[@]} -gt 0 ]; then kill "${tails[@]}" 2>/dev/null || true; fi
}

boot() {
  local dom0_mem=${XENLAB_DOM0_MEM:-512}
  # Xen: console on the serial port (the log); dom0_mem fixed so xl does not balloon dom0.
  # A test machine: no speculative-execution mitigations in Xen or dom0 (retpolines and RSB
  # stuffing are expensive under TCG), no scrubbing of free memory. Both halve dom0's boot.
  local xen_args="console=com1 dom0_mem=${dom0_mem}M,max:${dom0_mem}M bootscrub=false spec-ctrl=no ${XENLAB_XEN_ARGS:-}"
  # dom0: QEMU's -initrd separates multiboot modules with ',' so this line has none. Also
  # skipped: the crypto self-tests (~1.5 s under TCG) and the W+X page-table scan (rodata=off).
  local dom0_args="console=hvc0 earlyprintk=xen panic=-1 mitigations=off rodata=off cryptomgr.notests=1 initcall_blacklist=crypto_kdf108_init ${XENLAB_DOM0_ARGS:-}"
  # shellcheck disable=SC2054 # the commas belong to QEMU's option syntax
  local q=(qemu-system-x86_64
    -accel tcg,tb-size=256 -cpu qemu64,+svm -m "$mem_mib" -smp "${XENLAB_SMP:-2}"
    -nodefaults -display none -vga none -serial stdio -monitor none -no-reboot -nic none
    -pidfile "$run/qemu.pid"
    -kernel "$art/xen.elf" -append "$xen_args"
    -initrd "$art/vmlinux $dom0_args,$run/dom0-initrd"
    -device virtio-rng-pci
    -fsdev "local,id=xenlab,path=$run/share,security_model=none"
    -device virtio-9p-pci,fsdev=xenlab,mount_tag=xenlab
    -fsdev "local,id=payload,path=$run/payload,security_model=none,readonly=on"
    -device virtio-9p-pci,fsdev=payload,mount_tag=payload)
  printf '%q ' "${q[@]}" > "$run/qemu.cmd"

  trap cleanup EXIT
  trap 'cleanup; exit 130' INT
  trap 'cleanup; exit 143' TERM
  local timecmd=()
  [ -x /usr/bin/time ] && timecmd=(/usr/bin/time -f '%U %S %M' -o "$run/qemu.time")
  busy0=$(busy_ticks)
  local start=$EPOCHREALTIME
  # Every serial line gets the host's time since QEMU started: the boot phases come from it.
  { local rc=0
    ${timecmd[@]+"${timecmd[@]}"} timeout --kill-after=10 "$timeout_s" "${q[@]}" < /dev/null 2>&1 || rc=$?
    echo "XENLAB-QEMU-EXIT $rc"; } |
    while IFS= read -r line; do
      now=$EPOCHREALTIME
      printf '[%8.3f] %s\n' "$(( ${now/./} - ${start/./} ))e-6" "${line//$'\r'/}"
    done > "$run/serial.log" &
  local logger=$!
  tail -n +1 -f --pid="$logger" "$run/share/ctl/stdout" & tails+=($!)
  tail -n +1 -f --pid="$logger" "$run/share/ctl/stderr" >&2 & tails+=($!)
  wait "$logger" || true
  wait "${tails[@]}" 2>/dev/null || true
  tails=()
  local total_ms=$(( (${EPOCHREALTIME/./} - ${start/./}) / 1000 ))
  busy1=$(busy_ticks)

  local qrc
  qrc=$(sed -n 's/.*XENLAB-QEMU-EXIT \([0-9]*\).*/\1/p' "$run/serial.log" | tail -n1)
  rm -f "$run/qemu.pid"
  report_times "$total_ms"
  hand_back_results
  prune_runs
  if [ -s "$run/share/ctl/rc" ]; then
    return "$(cat "$run/share/ctl/rc")"
  fi
  if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
    say "timeout: killed after $timeout_s s; serial log $run/serial.log ends with:"
    tail -n 40 "$run/serial.log" >&2
    exit 124
  fi
  if [ -s "$run/share/ctl/setup-failed" ]; then
    say "dom0 setup failed: $(cat "$run/share/ctl/setup-failed")"
  else
    say "the lab stopped before the script finished (QEMU exit ${qrc:-?})"
  fi
  say "serial log $run/serial.log ends with:"
  tail -n 40 "$run/serial.log" >&2
  exit 125
}

# The boot phases from the serial log's host timestamps, on one line.
report_times() {
  [ "${XENLAB_QUIET:-0}" = 1 ] && { say "serial log $run/serial.log"; return; }
  local line t name out=""
  while IFS= read -r line; do
    t=${line#[}; t=${t%%]*}; t=${t// /}
    case $line in
      *"(XEN) Xen version"*) name=xen ;;
      *"Linux version"*) name='dom0-kernel' ;;
      *XENLAB-STAGE\ *) name=${line#*XENLAB-STAGE }; name=${name%% *} ;;
      *) continue ;;
    esac
    case " $out " in *" $name="*) continue ;; esac
    out="$out $name=${t}s"
  done < <(grep -a -E '\(XEN\) Xen version|Linux version|XENLAB-STAGE ' "$run/serial.log")
  say "times since QEMU start:$out total=$(( $1 / 1000 )).$(printf '%03d' $(( $1 % 1000 )))s;$(host_noise "$1") serial log $run/serial.log"
}

# Busy CPU time of the whole host, in clock ticks (user nice system irq softirq steal).
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }

# How much CPU other processes used while the lab ran: on a shared machine every phase above
# stretches with it (a run next to a compiler is 2-4 times slower).
host_noise() {
  [ -s "$run/qemu.time" ] || return 0
  local qemu_user qemu_sys rss
  read -r qemu_user qemu_sys rss < <(tail -n1 "$run/qemu.time")
  awk -v b=$((busy1 - busy0)) -v hz="$(getconf CLK_TCK)" -v u="$qemu_user" -v s="$qemu_sys" \
      -v ms="$1" -v n="$(nproc)" -v rss="$rss" 'BEGIN {
    other = b / hz - u - s; if (other < 0) other = 0
    printf " qemu cpu=%.0fs rss=%dMiB, other processes used %.0f%% of %d cores;", u + s, rss / 1024, 100 * other / (ms / 1000) / n, n }'
}

# What the script left in /results goes to --results DIR (hard links when possible), also when
# the script failed or the lab stopped early.
hand_back_results() {
  [ -n "$results" ] || return 0
  local src=$run/share/results
  [ -n "$(ls -A "$src")" ] || return 0
  cp -alf "$src/." "$results/" 2>/dev/null || cp -af "$src/." "$results/" || say "cannot copy the results to $results"
  rm -rf "$src"
}

prune_runs() {
  local runs=${XENLAB_RUNS:-/tmp/xenlab/runs}
  rm -rf "$run/payload" "$run/dom0-initrd" "$run/lab" "$run/lab.cpio"
  # Never a run that is still going (other lab.sh processes share the directory).
  ls -1dt "$runs"/*/ 2>/dev/null | tail -n +21 | while read -r old; do
    [ -e "$old/qemu.pid" ] || rm -rf "$old"
  done
}

# ---- selftest ---------------------------------------------------------------------------------
cmd_selftest() {
  [ $# -eq 0 ] || die "selftest takes no arguments"
  if ! command -v qemu-system-x86_64 >/dev/null; then
    say "selftest skipped: qemu-system-x86_64 is not installed"
    exit 0
  fi
  local tmp; tmp=$(mktemp -d /tmp/xenlab-selftest.XXXXXX)
  # A payload with known content, checked in dom0 and echoed back through the results share.
  head -c 1048576 /dev/urandom > "$tmp/blob"
  local want; want=$(sha256sum "$tmp/blob" | cut -d' ' -f1)
  local rc=0
  "$0" run --timeout "${XENLAB_SELFTEST_TIMEOUT:-300}" --payload "$tmp/blob:in/blob.bin" \
    --results "$tmp/results" "$here/dom0/selftest.sh" "$want" > "$tmp/stdout" 2> "$tmp/stderr" || rc=$?
  cat "$tmp/stdout"; grep -v '^selftest-stderr-line$' "$tmp/stderr" >&2 || true
  local bad=()
  [ "$rc" = 0 ] || bad+=("exit code $rc")
  grep -qx 'selftest: PASS' "$tmp/stdout" || bad+=("no 'selftest: PASS' on stdout")
  grep -qx 'selftest-stderr-line' "$tmp/stderr" || bad+=("the script's stderr did not come back")
  grep -q 'selftest-stderr-line' "$tmp/stdout" && bad+=("stderr leaked into stdout")
  [ "$(cat "$tmp/results/blob.sha256" 2>/dev/null)" = "$want" ] || bad+=("results/blob.sha256 does not hold the payload's hash")
  rm -rf "$tmp"
  if [ ${#bad[@]} -gt 0 ]; then
    say "selftest FAILED: ${bad[*]}"
    [ "$rc" != 0 ] && exit "$rc"
    exit 1
  fi
  say "selftest passed"
}

# ---- xl-baseline ------------------------------------------------------------------------------
cmd_xl_baseline() {
  local kernel='' initrd='' disk='' vif=0 runs=3
  while [ $# -gt 0 ]; do
    case $1 in
      --kernel) kernel=${2:?--kernel needs a file}; shift 2 ;;
      --initrd) initrd=${2:?--initrd needs a file}; shift 2 ;;
      --disk) disk=${2:?--disk needs an image}; shift 2 ;;
      --vif) vif=1; shift ;;
      --runs) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--runs needs a count"; runs=$2; shift 2 ;;
      *) die "unknown xl-baseline option $1 (lab.sh help)" ;;
    esac
  done
  local art; art=$("$here/build.sh") || die "building the lab's artifacts failed"
  local bundle=$repo/target/guest
  local args=(--payload "$art/vmlinux:debian/vmlinux" --payload "$art/guest-initrd.cpio.gz:debian/initrd")
  local custom=0
  if [ -n "$kernel" ]; then
    custom=1
  elif [ -f "$bundle/vmlinux" ] && [ -f "$bundle/initrd" ]; then
    kernel=$bundle/vmlinux; initrd=${initrd:-$bundle/initrd}; disk=${disk:-$art/root.squashfs}; vif=1; custom=1
  fi
  local script_args=("$runs")
  if [ $custom = 1 ]; then
    args+=(--payload "$kernel:custom/kernel")
    [ -n "$initrd" ] && args+=(--payload "$initrd:custom/initrd")
    [ -n "$disk" ] && args+=(--payload "$disk:custom/disk")
    script_args+=("$vif")
  fi
  exec "$0" run --timeout "${XENLAB_BASELINE_TIMEOUT:-900}" "${args[@]}" "$here/dom0/xl-baseline.sh" "${script_args[@]}"
}

main "$@"
