#!/usr/bin/env python3
"""Zone launch breakdown and density on the QEMU backend, measured through the real spored.

Starts spored (release build) on a temporary state dir with the guest bundle and the busybox
demo image, then:
  1. launches RUNS zones one after the other (each `sh -c true`) and prints, per zone, the phases
     from the zone's state history and the guest's own boot times:
       prepare  Pending   -> Creating   (image lookup, config block)
       create   Creating  -> Starting   (kernel cache, QEMU start, console/IDM connected)
       kernel   QEMU start -> spore-init (the guest kernel's boot, guest clock)
       init     spore-init -> workload exec (modules, disks, overlay, switch root; guest clock)
       total    request -> Running (host clock)
  2. density: DENSITY zones of 128 MiB running `sleep`, with spored's RSS before and after
     (the goal: under 2 MiB per zone) and the mean QEMU RSS per zone, for the configured
     TCG translation-cache bound and for QEMU's default.

Usage: bench/zones.py [RUNS] [DENSITY]   (defaults 5 and 20; run as root after
kernel/build-bundle.sh and `cargo build --release -p spored -p sporectl`)
"""

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(REPO, "target", "release")
BUNDLE = os.environ.get("SPORE_GUEST_DIR", os.path.join(REPO, "target", "guest"))


def ts(value):
    """proto3 JSON timestamp -> seconds since the epoch."""
    value = value.rstrip("Z")
    if "." in value:
        head, frac = value.split(".")
        value = f"{head}.{frac[:6]}"
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f").timestamp()
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S").timestamp()


def rss_kib(pid):
    return status_kib(pid, "VmRSS")


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def pss_kib(pid):
    """Proportional set size: shared pages (the kernel file QEMU maps) split among sharers."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


class Spored:
    def __init__(self, root, tb_size):
        self.root = root
        self.socket = os.path.join(root, "spored.sock")
        state = os.path.join(root, "state")
        os.makedirs(os.path.join(state, "guest"), exist_ok=True)
        for f in ("kernel", "initrd"):
            shutil.copy(os.path.join(BUNDLE, f), os.path.join(state, "guest", f))
        config = os.path.join(root, "spored.toml")
        with open(config, "w") as f:
            f.write(f"[qemu]\ntcg_tb_size_mib = {tb_size}\n[zones]\nmax_parallel_launches = 4\n")
        self.log = open(os.path.join(root, "spored.log"), "ab")
        self.proc = subprocess.Popen(
            [os.path.join(RELEASE, "spored"), "--socket", self.socket, "--state-dir", state,
             "--config", config],
            stdout=self.log, stderr=self.log, start_new_session=True)
        for _ in range(300):
            if self.ctl("host", "status", check=False).returncode == 0:
                break
            time.sleep(0.1)
        else:
            sys.exit(f"spored did not start: see {self.log.name}")

    def ctl(self, *args, check=True):
        return subprocess.run([os.path.join(RELEASE, "sporectl"), "--socket", self.socket, *args],
                              capture_output=True, text=True, check=check)

    def json(self, *args):
        return json.loads(self.ctl("-o", "json", *args).stdout)

    def wait(self, zone, states, timeout=300):
        start = time.time()
        while time.time() - start < timeout:
            z = self.json("zone", "get", zone)
            state = z["status"]["state"]
            if state in states:
                return z
            if state == "ZONE_STATE_FAILED":
                sys.exit(f"zone {zone} failed: {z['status'].get('reason')}")
            time.sleep(0.05)
        sys.exit(f"zone {zone} not {states} within {timeout} s")

    def stop(self):
        for z in self.json("zone", "list").get("zones", []):
            self.ctl("zone", "destroy", z["id"], check=False)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def breakdown(spored, runs):
    rows = []
    for i in range(runs):
        zone = spored.ctl("zone", "launch", "demo", "sh", "-c", "true").stdout.strip()
        z = spored.wait(zone, {"ZONE_STATE_EXITED"})
        at = {}
        for t in z["status"]["history"]:
            at.setdefault(t["to"], ts(t["time"]))
        boot = z["status"].get("guestBoot", {})
        init_start = int(boot.get("initStartMs", 0))
        exec_ms = int(boot.get("workloadExecMs", 0))
        rows.append({
            "prepare": (at["ZONE_STATE_CREATING"] - at["ZONE_STATE_PENDING"]) * 1000,
            "create": (at["ZONE_STATE_STARTING"] - at["ZONE_STATE_CREATING"]) * 1000,
            "kernel": init_start,
            "init": exec_ms - init_start,
            "total": (at["ZONE_STATE_RUNNING"] - at["ZONE_STATE_PENDING"]) * 1000,
        })
        spored.ctl("zone", "destroy", zone)
    cols = ["prepare", "create", "kernel", "init", "total"]
    print("launch breakdown (ms), one zone at a time, `sh -c true`:")
    print("run  " + "".join(f"{c:>9}" for c in cols))
    for i, r in enumerate(rows):
        print(f"{i + 1:<5}" + "".join(f"{r[c]:>9.0f}" for c in cols))
    print("med  " + "".join(f"{statistics.median(r[c] for r in rows):>9.0f}" for c in cols))


def density(spored, count):
    base = rss_kib(spored.proc.pid)
    zones = []
    for i in range(count):
        zones.append(spored.ctl("zone", "launch", "--memory", "128", "demo", "sleep", "3600")
                     .stdout.strip())
    for z in zones:
        spored.wait(z, {"ZONE_STATE_RUNNING"})
    time.sleep(2)
    after = rss_kib(spored.proc.pid)
    qemu, pss, anon = [], [], []
    for z in zones:
        pid = int(spored.json("zone", "get", z)["status"].get("domain", "").split()[-1])
        qemu.append(rss_kib(pid))
        pss.append(pss_kib(pid))
        anon.append(status_kib(pid, "RssAnon"))
    per_zone = (after - base) / count
    print(f"density: {count} zones of 128 MiB running")
    print(f"  spored RSS {base / 1024:.1f} MiB idle -> {after / 1024:.1f} MiB: "
          f"{per_zone / 1024:.2f} MiB per zone (goal < 2 MiB)")
    print(f"  QEMU per zone: RSS mean {statistics.mean(qemu) / 1024:.0f} MiB "
          f"(max {max(qemu) / 1024:.0f}), PSS mean {statistics.mean(pss) / 1024:.0f} MiB, "
          f"anonymous mean {statistics.mean(anon) / 1024:.0f} MiB")
    for z in zones:
        spored.ctl("zone", "destroy", z, check=False)


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    for f in ("spored", "sporectl"):
        if not os.path.exists(os.path.join(RELEASE, f)):
            sys.exit(f"{RELEASE}/{f} is missing: cargo build --release -p spored -p sporectl")
    layout = tempfile.mkdtemp(prefix="spore-bench-image-")
    subprocess.run([os.path.join(REPO, "scripts", "demo-image.sh"), os.path.join(layout, "oci"),
                    "demo"], check=True, capture_output=True)
    for tb_size in (64, 0):
        label = f"tb-size {tb_size} MiB" if tb_size else "QEMU's default tb-size"
        print(f"\n=== QEMU backend, {label}")
        root = tempfile.mkdtemp(prefix="spore-bench-")
        spored = Spored(root, tb_size)
        try:
            spored.ctl("image", "import", "--tag", "demo", os.path.join(layout, "oci"))
            if tb_size:
                breakdown(spored, runs)
            density(spored, count)
        finally:
            spored.stop()
            shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(layout, ignore_errors=True)


if __name__ == "__main__":
    main()
