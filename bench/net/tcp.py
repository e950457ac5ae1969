#!/usr/bin/env python3
"""TCP bulk throughput and request/response latency through a userspace network stack serving a
tap in a private network namespace: sporenet against pasta (Debian's passt) and slirp4netns.

Each stack serves the same setup (docs/network.md, "Measured"; ../shared/reference/network.md
section 7.2): a namespace made for the run with one tap, the zone's address 10.75.0.2/16 (slirp4netns:
its fixed 10.0.2.100/24), the MTU under test and txqueuelen 10000 for every stack; the stack
pinned to CPU 0 and both iperf3 ends (and sockperf) to CPU 1. The server listens on the host's
127.0.0.1 and the client in the namespace reaches it through the stack's gateway mapping
(sporenet: policy.host_loopback_via_gateway; pasta: its gateway mapping, port forwarding off;
slirp4netns: 10.0.2.2), so every byte crosses the tap; the tap's byte counters are checked
against iperf3's. Runs are interleaved (S P L S P L ...), and each cell reports the median with
min-max over the rounds, and the stack process's CPU seconds (utime + stime) per GB moved.

Usage: bench/net/tcp.py [--rounds 5] [--seconds 5] [--mtus 1500,65520] [--stacks sporenet,pasta,slirp4netns]

`--stacks sporenet-qemu,passt-qemu` puts QEMU's stream link in the path instead (QEMU 7.2 with
-M none relaying between the tap and a -netdev stream socket; sporenet connects to QEMU's socket
as to a zone's, QEMU connects to passt's as passt documents): the QEMU A/B of the same "guest"
(the namespace's kernel) through both stacks.
Run as root after `cargo build --release -p sporenet`; needs iperf3, passt, slirp4netns, sockperf
(scripts/install-deps.sh). Only loopback and the run's own namespace are addressed.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPORENET = ROOT / "target/release/sporenet"
NS = f"spnb-{os.getpid()}"
TAP = "tap0"
IPERF_PORT = 15201
SOCKPERF_PORT = 15202
CLK_TCK = os.sysconf("SC_CLK_TCK")


def sh(*args, check=True, **kw):
    return subprocess.run(args, check=check, capture_output=True, text=True, **kw)


def ns(*args, check=True):
    return sh("ip", "-n", NS, *args, check=check)


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tap_bytes():
    base = f"/sys/class/net/{TAP}/statistics"
    out = sh("ip", "netns", "exec", NS, "cat", f"{base}/rx_bytes", f"{base}/tx_bytes").stdout.split()
    return int(out[0]), int(out[1])


def wait_for(what, check, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def tap_exists():
    return ns("link", "show", TAP, check=False).returncode == 0


def zone_tap(mtu, gateway):
    """The tap a zone would have: sporenet's reserved MAC and address, default via the gateway."""
    ns("tuntap", "add", "mode", "tap", "name", TAP)
    ns("link", "set", TAP, "address", "02:73:70:00:00:02", "mtu", str(mtu), "up")
    ns("addr", "add", "10.75.0.2/16", "dev", TAP)
    ns("route", "add", "default", "via", gateway)


class Stack:
    """One stack serving the namespace: start() makes the namespace and the stack, stop() ends both."""

    name = ""
    target = ""

    def __init__(self, tmp):
        self.tmp = tmp
        self.proc = None

    def start(self, mtu):
        sh("ip", "netns", "add", NS)
        ns("link", "set", "lo", "up")
        self.launch(mtu)
        wait_for(f"{self.name}'s tap", tap_exists)
        ns("link", "set", TAP, "txqueuelen", "10000")
        self.ready(mtu)

    def launch(self, mtu):
        raise NotImplementedError

    def ready(self, mtu):
        pass

    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        sh("ip", "netns", "del", NS, check=False)


class Sporenet(Stack):
    name = "sporenet"
    target = "10.75.0.1"

    def launch(self, mtu):
        zone_tap(mtu, self.target)
        cfg = Path(self.tmp) / "sporenet.toml"
        cfg.write_text("[policy]\nhost_loopback_via_gateway = true\n")
        self.status = Path(self.tmp) / "status.json"
        self.status.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", str(SPORENET), "--config", str(cfg), "--status-file",
             str(self.status), "zone", "--tap", TAP, "--netns", NS, "--mtu", str(mtu)],
            stdout=subprocess.DEVNULL, stderr=open(Path(self.tmp) / "sporenet.log", "a"))

    def ready(self, mtu):
        def up():
            try:
                return json.loads(self.status.read_text())["zones"][0]["link_up"]
            except (OSError, ValueError, KeyError, IndexError):
                return False
        wait_for("sporenet's link", up)


class Pasta(Stack):
    name = "pasta"
    target = "10.75.0.1"

    def launch(self, mtu):
        # -t/-u/-T/-U none: no port forwarding, so nothing is spliced around the tap.
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", "pasta", "-f", "-q", "--runas", "0:0", "--config-net", "-I", TAP, "-m", str(mtu),
             "-a", "10.75.0.2", "-n", "16", "-g", self.target, "-4",
             "-t", "none", "-u", "none", "-T", "none", "-U", "none", "--netns", NS],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ready(self, mtu):
        wait_for("pasta's address", lambda: "10.75.0.2" in ns("addr", "show", TAP).stdout)
        ns("link", "set", TAP, "mtu", str(mtu))


class Slirp(Stack):
    name = "slirp4netns"
    target = "10.0.2.2"

    def launch(self, mtu):
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", "slirp4netns", "--configure", "--mtu", str(mtu),
             "--netns-type=path", f"/run/netns/{NS}", TAP],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ready(self, mtu):
        wait_for("slirp4netns's address", lambda: "10.0.2.100" in ns("addr", "show", TAP).stdout)


class QemuRelay(Stack):
    """QEMU's stream link in the path: QEMU (-M none, no guest) relays between the namespace's
    tap and a -netdev stream socket, the stack sits on that socket. The same QEMU code path a
    zone's NIC uses; QEMU runs on CPU 0 beside the stack for every stack alike."""

    target = "10.75.0.1"

    def launch(self, mtu):
        zone_tap(mtu, self.target)
        self.socket = Path(self.tmp) / f"{self.name}.sock"
        self.socket.unlink(missing_ok=True)
        self.start_stack(mtu)
        self.qemu = subprocess.Popen(
            ["ip", "netns", "exec", NS, "taskset", "-c", "0", "qemu-system-x86_64", "-M", "none",
             "-nographic", "-nodefaults",
             "-netdev", f"tap,id=t0,ifname={TAP},script=no,downscript=no",
             "-netdev", f"stream,id=s0,server={self.qemu_server},addr.type=unix,addr.path={self.socket}",
             "-netdev", "hubport,id=h0,hubid=0,netdev=t0", "-netdev", "hubport,id=h1,hubid=0,netdev=s0"],
            stdout=subprocess.DEVNULL, stderr=open(Path(self.tmp) / "qemu.log", "a"))
        self.after_qemu(mtu)

    def stop(self):
        if getattr(self, "qemu", None) is not None:
            self.qemu.kill()
            self.qemu.wait()
            self.qemu = None
        super().stop()


class SporenetQemu(QemuRelay, Sporenet):
    """sporenet connects to QEMU's listening socket, as it does to a zone's net.sock."""

    name = "sporenet-qemu"
    qemu_server = "on"

    def start_stack(self, mtu):
        pass

    def after_qemu(self, mtu):
        wait_for("QEMU's socket", self.socket.exists)
        cfg = Path(self.tmp) / "sporenet.toml"
        cfg.write_text("[policy]\nhost_loopback_via_gateway = true\n")
        self.status = Path(self.tmp) / "status.json"
        self.status.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", str(SPORENET), "--config", str(cfg), "--status-file",
             str(self.status), "zone", "--qemu-socket", str(self.socket), "--mtu", str(mtu)],
            stdout=subprocess.DEVNULL, stderr=open(Path(self.tmp) / "sporenet.log", "a"))


class PasstQemu(QemuRelay):
    """passt listens and QEMU connects (passt's own layout), as `passt` documents for QEMU."""

    name = "passt-qemu"
    qemu_server = "off"

    def start_stack(self, mtu):
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", "passt", "-f", "-q", "--runas", "0:0", "-1", "-s", str(self.socket),
             "-m", str(mtu), "-a", "10.75.0.2", "-n", "16", "-g", self.target, "-4",
             "-t", "none", "-u", "none"],
            stdout=subprocess.DEVNULL, stderr=open(Path(self.tmp) / "passt.log", "a"))
        wait_for("passt's socket", self.socket.exists)

    def after_qemu(self, mtu):
        pass

    def ready(self, mtu):
        # A TCP connect through passt's gateway mapping works once QEMU is connected.
        probe = f"import socket; socket.create_connection(('{self.target}', {SOCKPERF_PORT}), 1)"
        wait_for("passt's gateway", lambda: sh(
            "ip", "netns", "exec", NS, sys.executable, "-c", probe, check=False).returncode == 0)


STACKS = {
    "sporenet": Sporenet,
    "pasta": Pasta,
    "slirp4netns": Slirp,
    "sporenet-qemu": SporenetQemu,
    "passt-qemu": PasstQemu,
}


def iperf(stack, seconds, reverse):
    """One iperf3 run; returns (Gbit/s, GB moved, stack CPU seconds, tap bytes / payload)."""
    cpu0 = cpu_seconds(stack.pid())
    rx0, tx0 = tap_bytes()
    args = ["ip", "netns", "exec", NS, "taskset", "-c", "1", "iperf3", "-c", stack.target,
            "-p", str(IPERF_PORT), "-t", str(seconds), "-O", "1", "-J"]
    if reverse:
        args.append("-R")
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
    result = json.loads(out.stdout or "{}")
    if "error" in result or "end" not in result:
        raise RuntimeError(f"iperf3 through {stack.name}: {result.get('error', out.stderr)}")
    cpu = cpu_seconds(stack.pid()) - cpu0
    rx1, tx1 = tap_bytes()
    gbits = result["end"]["sum_received"]["bits_per_second"] / 1e9
    # Bytes over the whole run (omitted second included) for the CPU and tap ratios.
    moved = sum(i["sum"]["bytes"] for i in result["intervals"])
    # The namespace sends on its tap going out (tx) and receives coming in (rx).
    tap = (rx1 - rx0) if reverse else (tx1 - tx0)
    return gbits, moved / 1e9, cpu, tap / max(moved, 1)


def sockperf(stack, seconds):
    """TCP ping-pong with 64-byte messages: (p50 us, p99 us)."""
    out = sh("ip", "netns", "exec", NS, "taskset", "-c", "1", "sockperf", "ping-pong", "--tcp",
             "-i", stack.target, "-p", str(SOCKPERF_PORT), "-t", str(seconds), "-m", "64",
             check=False, timeout=seconds + 60)
    text = out.stdout + out.stderr
    p = {}
    for q in ("50.000", "99.000"):
        m = re.search(rf"percentile {re.escape(q)} =\s+([\d.]+)", text)
        if not m:
            raise RuntimeError(f"sockperf through {stack.name}: no {q} percentile in:\n{text}")
        p[q] = float(m.group(1))
    return p["50.000"], p["99.000"]


def cpu_ticks():
    """(busy, total) jiffies of the whole machine."""
    stat = Path("/proc/stat").read_text().split("\n")[0].split()[1:]
    busy = sum(int(x) for i, x in enumerate(stat) if i not in (3, 4))
    total = sum(int(x) for x in stat)
    return busy, total


def fmt(values, digits=2):
    med = statistics.median(values)
    return f"{med:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--mtus", default="1500,65520")
    ap.add_argument("--stacks", default="sporenet,pasta,slirp4netns")
    ap.add_argument("--latency-seconds", type=int, default=5)
    a = ap.parse_args()
    if not SPORENET.exists():
        sys.exit(f"{SPORENET} is missing: cargo build --release -p sporenet")
    stacks = [s for s in a.stacks.split(",") if s]
    mtus = [int(m) for m in a.mtus.split(",")]
    tmp = tempfile.mkdtemp(prefix="spnb-")
    servers = [
        subprocess.Popen(["taskset", "-c", "1", "iperf3", "-s", "-B", "127.0.0.1", "-p", str(IPERF_PORT)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen(["taskset", "-c", "1", "sockperf", "server", "--tcp", "-i", "127.0.0.1",
                          "-p", str(SOCKPERF_PORT)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    time.sleep(0.5)
    results = {}  # (stack, mtu, direction) -> list of (gbits, gb, cpu, tap ratio)
    latency = {}  # stack -> list of (p50, p99)
    busy0, total0 = cpu_ticks()
    try:
        for r in range(a.rounds):
            for mtu in mtus:
                for name in stacks:
                    stack = STACKS[name](tmp)
                    try:
                        stack.start(mtu)
                        for direction, reverse in (("ns->host", False), ("host->ns", True)):
                            try:
                                res = iperf(stack, a.seconds, reverse)
                            except (RuntimeError, subprocess.TimeoutExpired) as e:
                                # A stalled stack: counted as 0 Gbit/s, left out of CPU s/GB.
                                print(f"round {r + 1} {name:12} mtu {mtu:5} {direction}: failed: "
                                      f"{str(e).splitlines()[0]}", flush=True)
                                res = (0.0, 0.0, 0.0, float("nan"))
                                results.setdefault((name, mtu, direction), []).append(res)
                                continue
                            results.setdefault((name, mtu, direction), []).append(res)
                            print(f"round {r + 1} {name:12} mtu {mtu:5} {direction}: "
                                  f"{res[0]:6.2f} Gbit/s, cpu {res[2] / max(res[1], 1e-9):5.2f} s/GB, "
                                  f"tap/payload {res[3]:.3f}", flush=True)
                        if mtu == mtus[0] and a.latency_seconds > 0:
                            lat = sockperf(stack, a.latency_seconds)
                            latency.setdefault(name, []).append(lat)
                            print(f"round {r + 1} {name:12} mtu {mtu:5} tcp ping-pong p50 {lat[0]:.1f} us, "
                                  f"p99 {lat[1]:.1f} us", flush=True)
                    finally:
                        stack.stop()
    finally:
        for s in servers:
            s.kill()
            s.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    busy1, total1 = cpu_ticks()
    print()
    print(f"machine: {os.cpu_count()} CPUs, busy {100 * (busy1 - busy0) / max(total1 - total0, 1):.0f}% "
          f"over the run (this benchmark included); {a.rounds} rounds of {a.seconds} s (+1 s omitted), "
          f"interleaved; stack on CPU 0, iperf3 on CPU 1; txqueuelen 10000")
    print()
    print("| stack | MTU | ns->host Gbit/s | host->ns Gbit/s | CPU s/GB ns->host | CPU s/GB host->ns | tap/payload |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    med = {}
    for mtu in mtus:
        for name in stacks:
            cells = []
            cpus = []
            ratios = []
            for direction in ("ns->host", "host->ns"):
                rs = results.get((name, mtu, direction), [])
                if not rs:
                    cells.append("-")
                    cpus.append("-")
                    continue
                g = [x[0] for x in rs]
                med[(name, mtu, direction)] = statistics.median(g)
                cells.append(fmt(g))
                moved = [x for x in rs if x[1] > 0.01]
                cpus.append(fmt([x[2] / x[1] for x in moved]) if moved else "-")
                ratios.extend(x[3] for x in moved)
            ratio = f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else "-"
            print(f"| {name} | {mtu} | {cells[0]} | {cells[1]} | {cpus[0]} | {cpus[1]} | {ratio} |")
    if latency:
        print()
        print("| stack | TCP ping-pong p50 us | p99 us |")
        print("| --- | --- | --- |")
        for name in stacks:
            if name in latency:
                print(f"| {name} | {fmt([x[0] for x in latency[name]], 1)} | {fmt([x[1] for x in latency[name]], 1)} |")
    print()
    for mtu in mtus:
        for direction in ("ns->host", "host->ns"):
            q, p = med.get(("sporenet-qemu", mtu, direction)), med.get(("passt-qemu", mtu, direction))
            if q is not None and p:
                print(f"MTU {mtu} {direction} through QEMU's stream link: sporenet/passt = {q / p:.2f}")
            s = med.get(("sporenet", mtu, direction))
            if s is None:
                continue
            parts = []
            for peer in ("pasta", "slirp4netns"):
                p = med.get((peer, mtu, direction))
                if p:
                    parts.append(f"sporenet/{peer} = {s / p:.2f}")
            if parts:
                print(f"MTU {mtu} {direction}: " + ", ".join(parts))
    if "sporenet" in latency and "pasta" in latency:
        s = statistics.median(x[0] for x in latency["sporenet"])
        p = statistics.median(x[0] for x in latency["pasta"])
        print(f"latency p50: sporenet/pasta = {s / p:.2f}")


if __name__ == "__main__":
    main()
