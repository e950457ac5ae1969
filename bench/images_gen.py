#!/usr/bin/env python3
"""Deterministic content for the image benchmark: one layer's changes to a rootfs.

    images_gen.py ROOTFS LAYER     (LAYER = 1, 2 or 3)

Layer 1: 3000 small text-like files in nested directories, symlinks, a 20 MiB random file.
Layer 2: 2000 more small files, a 16 MiB half-random file, a 12 MiB text file.
Layer 3: deletes 500 layer-1 files and one directory (whiteouts), rewrites 100 files,
         adds 1000 small files and a 16 MiB random file.
About 100 MB unpacked in all. Same bytes on every run (seeded PRNG).
"""
import os
import random
import shutil
import sys

root, layer = sys.argv[1], int(sys.argv[2])
rng = random.Random(1000 + layer)
WORDS = [("".join(chr(97 + random.Random(i).randrange(26)) for _ in range(1 + i % 9))) for i in range(4000)]
CORPUS = " ".join(random.Random(7).choice(WORDS) for _ in range(400_000)).encode()


def text(n):
    parts, left = [], n
    while left > 0:
        k = min(left, 65536)
        start = rng.randrange(len(CORPUS) - k - 1)
        parts.append(CORPUS[start:start + k])
        left -= k
    return b"".join(parts)


def write(rel, data, mode=0o644):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def small_files(prefix, count):
    for i in range(count):
        d = f"{prefix}/d{i % 40:02}/s{(i // 40) % 10}"
        write(f"{d}/f{i:05}.txt", text(rng.randrange(512, 16384)))


if layer == 1:
    small_files("usr/share/l1", 3000)
    write("usr/bin/big-random", rng.randbytes(20 << 20), 0o755)
    os.makedirs(os.path.join(root, "usr/lib"), exist_ok=True)
    for i in range(200):
        os.symlink(f"../share/l1/d{i % 40:02}/s0/f{i:05}.txt", os.path.join(root, f"usr/lib/link{i:03}"))
elif layer == 2:
    small_files("opt/l2", 2000)
    half = b"".join(rng.randbytes(65536) + bytes(65536) for _ in range(128))
    write("opt/mixed.bin", half)
    write("opt/text.txt", text(12 << 20))
elif layer == 3:
    for i in range(0, 1000, 2):
        os.remove(os.path.join(root, f"usr/share/l1/d{i % 40:02}/s{(i // 40) % 10}/f{i:05}.txt"))
    shutil.rmtree(os.path.join(root, "usr/share/l1/d39"))
    for i in range(1001, 1201, 2):
        write(f"usr/share/l1/d{i % 40:02}/s{(i // 40) % 10}/f{i:05}.txt", text(4096))
    small_files("srv/l3", 1000)
    write("srv/random.bin", rng.randbytes(16 << 20))
else:
    sys.exit("layer must be 1, 2 or 3")
