#!/usr/bin/env bash
# A local docker-registry (Debian's distribution 2.8) on 127.0.0.1 for manual use and the image
# benchmark; the Rust tests start their own. No systemd needed.
#   scripts/registry.sh start [PORT] [DIR]   (default 5000, /tmp/spore-registry)
#   scripts/registry.sh stop [DIR]
#   scripts/registry.sh status [DIR]
# Push with: skopeo copy oci:LAYOUT:TAG docker://127.0.0.1:PORT/REPO:TAG --dest-tls-verify=false
set -euo pipefail
trap 'echo "registry: error: line $LINENO: \"$BASH_COMMAND\" exited with $?" >&2' ERR
cmd=${1:-}
case "$cmd" in
  start) port=${2:-5000}; dir=${3:-/tmp/spore-registry} ;;
  stop|status) dir=${2:-/tmp/spore-registry} ;;
  *) echo "usage: $0 start [PORT] [DIR] | stop [DIR] | status [DIR]" >&2; exit 2 ;;
esac
pidfile=$dir/registry.pid

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case "$cmd" in
  start)
    command -v docker-registry >/dev/null || { echo "registry: docker-registry is missing (scripts/install-deps.sh)" >&2; exit 1; }
    if running; then echo "registry: already running (pid $(cat "$pidfile"))"; exit 0; fi
    mkdir -p "$dir/storage"
    cat > "$dir/config.yml" <<CONF
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
CONF
    setsid docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 < /dev/null &
    echo $! > "$pidfile"
    for _ in $(seq 100); do
      if { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
        exec 3>&-
        echo "registry: 127.0.0.1:$port (pid $(cat "$pidfile"), log $dir/registry.log)"
        exit 0
      fi
      running || { echo "registry: exited; see $dir/registry.log" >&2; exit 1; }
      sleep 0.1
    done
    echo "registry: not listening after 10 s; see $dir/registry.log" >&2
    exit 1
    ;;
  stop)
    if running; then kill "$(cat "$pidfile")"; echo "registry: stopped"; else echo "registry: not running"; fi
    rm -f "$pidfile"
    ;;
  status)
    if running; then echo "registry: running (pid $(cat "$pidfile"))"; else echo "registry: not running"; exit 1; fi
    ;;
esac
