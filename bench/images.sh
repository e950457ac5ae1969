#!/usr/bin/env bash
# Image pull + pack benchmark (not a test): spore-oci against the peer pipeline
# `skopeo copy` + `umoci unpack` + `mksquashfs` at the same zstd level, in the same run, on a
# ~100 MB three-layer image (thousands of small files plus a few large ones, generated
# deterministically by bench/images_gen.py and served by a local docker-registry).
#   bench/images.sh            (env: LEVEL=3 zstd level, RUNS=3, PORT=5055, WORK=/tmp/spore-bench-images)
# Prints per-run times, medians, the ratio ours/peer, a cache-hit pull time and peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
LEVEL=${LEVEL:-3}
RUNS=${RUNS:-3}
PORT=${PORT:-5055}
WORK=${WORK:-/tmp/spore-bench-images}
REG=127.0.0.1:$PORT
REF=$REG/bench/big:v1

for tool in skopeo umoci mksquashfs unsquashfs docker-registry python3 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "images.sh: $tool is missing (scripts/install-deps.sh)" >&2; exit 1; }
done

echo "== build (release)"
cargo build --release --quiet -p spore-oci --example oci-pull
PULL=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/examples/oci-pull

rm -rf "$WORK"
mkdir -p "$WORK"
trap 'scripts/registry.sh stop "$WORK/registry" >/dev/null 2>&1 || true' EXIT
scripts/registry.sh start "$PORT" "$WORK/registry" >/dev/null

echo "== generate the image (umoci, 3 gzip layers)"
L=$WORK/layout
umoci init --layout "$L"
umoci new --image "$L:v1"
for layer in 1 2 3; do
  rm -rf "$WORK/gen"
  umoci unpack --image "$L:v1" "$WORK/gen" >/dev/null
  python3 bench/images_gen.py "$WORK/gen/rootfs" "$layer"
  umoci repack --image "$L:v1" "$WORK/gen" >/dev/null
done
umoci config --image "$L:v1" --config.cmd /bin/sh >/dev/null
umoci gc --layout "$L"
rm -rf "$WORK/gen"
skopeo copy --quiet --dest-tls-verify=false "oci:$L:v1" "docker://$REF"
unpacked=$(du -sb --apparent-size "$L/blobs" | cut -f1)
echo "   compressed blobs: $unpacked bytes"

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
t() { /usr/bin/time -f "%e %M" -o "$WORK/time" "$@"; read -r secs kb < "$WORK/time"; }

echo "== ours: oci-pull (pull + verify + merge + squashfs zstd-$LEVEL), fresh store each run"
: > "$WORK/ours"
for i in $(seq "$RUNS"); do
  rm -rf "$WORK/store"
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  t "$PULL" "$WORK/store" "$REF" --insecure --zstd-level "$LEVEL" > "$WORK/ours.json"
  echo "$secs" >> "$WORK/ours"
  echo "   run $i: ${secs}s, peak RSS $((kb / 1024)) MiB"
  echo "$kb" >> "$WORK/ours.rss"
done
ours_img=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["path"])' "$WORK/ours.json")
digest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifest_digest"])' "$WORK/ours.json")

echo "== peer: skopeo copy + umoci unpack + mksquashfs -comp zstd -Xcompression-level $LEVEL"
: > "$WORK/peer"
for i in $(seq "$RUNS"); do
  rm -rf "$WORK/peer-oci" "$WORK/bundle" "$WORK/peer.sqfs"
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  start=$(date +%s.%N)
  t skopeo copy --quiet --src-tls-verify=false "docker://$REF" "oci:$WORK/peer-oci:v1"; s1=$secs; r1=$kb
  t umoci unpack --image "$WORK/peer-oci:v1" "$WORK/bundle"; s2=$secs; r2=$kb
  t mksquashfs "$WORK/bundle/rootfs" "$WORK/peer.sqfs" -comp zstd -Xcompression-level "$LEVEL" -noappend -quiet -no-progress; s3=$secs; r3=$kb
  total=$(python3 -c 'import sys; print(round(float(sys.argv[1]) - float(sys.argv[2]), 2))' "$(date +%s.%N)" "$start")
  echo "$total" >> "$WORK/peer"
  echo "   run $i: ${total}s (skopeo ${s1}s/$((r1 / 1024)) MiB, umoci ${s2}s/$((r2 / 1024)) MiB, mksquashfs ${s3}s/$((r3 / 1024)) MiB)"
done

echo "== cache hits (same store)"
# Three pulls in one process: the first pays for building the HTTP client (TLS setup), as a
# daemon does once at startup; the later ones are what a running daemon sees.
t "$PULL" "$WORK/store" "$REF" --insecure --repeat 3 > "$WORK/hit.json"
hit_cold=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[0])["elapsed_ms"])' "$WORK/hit.json")
hit_tag=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1])["elapsed_ms"])' "$WORK/hit.json")
echo "   by tag (one manifest request): ${hit_cold} ms in a fresh process, then ${hit_tag} ms"
t "$PULL" "$WORK/store" "$REG/bench/big@$digest" --insecure > "$WORK/hit2.json"
hit_digest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["elapsed_ms"])' "$WORK/hit2.json")
echo "   by digest (no network): ${hit_digest} ms in a fresh process"

echo "== same tree?"
rm -rf "$WORK/x-ours" "$WORK/x-peer"
unsquashfs -no-progress -quiet -d "$WORK/x-ours" "$ours_img" >/dev/null
unsquashfs -no-progress -quiet -d "$WORK/x-peer" "$WORK/peer.sqfs" >/dev/null
if diff -r --no-dereference "$WORK/x-ours" "$WORK/x-peer" >/dev/null; then echo "   identical content (diff -r)"; else echo "   DIFFERENT (diff -r $WORK/x-ours $WORK/x-peer)"; fi

o=$(median < "$WORK/ours"); p=$(median < "$WORK/peer"); rss=$(sort -n "$WORK/ours.rss" | tail -1)
echo
echo "zstd level:         $LEVEL"
echo "ours (median):      ${o}s   image $(stat -c %s "$ours_img") bytes, peak RSS $((rss / 1024)) MiB"
echo "peer (median):      ${p}s   image $(stat -c %s "$WORK/peer.sqfs") bytes"
echo "ratio ours/peer:    $(python3 -c 'import sys; print(round(float(sys.argv[1]) / float(sys.argv[2]), 3))' "$o" "$p")x   (goal <= 0.2x)"
echo "cache hit:          ${hit_tag} ms by tag (${hit_cold} ms with client setup), ${hit_digest} ms by digest   (goal <= 50 ms)"
echo "load average:       $(cut -d' ' -f1-3 /proc/loadavg)"
