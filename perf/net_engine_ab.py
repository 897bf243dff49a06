"""A/B of net-channel builds by the engines' CPU time per GB, on a noisy host.

Builds of `uccl/_native*.so` (copied aside after each build) are swapped into
the installed package in turn, round after round, between two network
namespaces joined by a veth pair; each round streams 16 MiB writes (4 in
flight) and reads each process's per-thread CPU time from /proc, so the figure
per build is the engines' own cost per byte, whatever else the host runs.
Alternate builds in the same minutes and compare medians.

    cp build/*/_native*.so /tmp/a.so   # ...change, rebuild...   cp build/*/_native*.so /tmp/b.so
    sudo python perf/net_engine_ab.py /tmp/a.so /tmp/b.so --reps 6
    sudo python perf/net_engine_ab.py /tmp/a.so /tmp/b.so --loss 1   # or --rate 200mbit, --seg

A build may carry environment settings: /tmp/b.so@UCCL_NUM_PATHS=1.
The installed extension is left as the last build run; reinstall afterwards.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time

import numpy as np

HERE = os.path.abspath(__file__)


def thread_cpu():
    """(engine threads, other threads) CPU seconds of this process."""
    tck = os.sysconf("SC_CLK_TCK")
    eng = other = 0.0
    for t in os.listdir("/proc/self/task"):
        try:
            comm = open(f"/proc/self/task/{t}/comm").read().strip()
            f = open(f"/proc/self/task/{t}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        c = (int(f[11]) + int(f[12])) / tck
        if comm == "uccl-engine":
            eng += c
        else:
            other += c
    return eng, other


def rank(bs, size, total, depth):
    from uccl.transport import Endpoint

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import send_writes

    ep = Endpoint(bs)
    peer = 1 - bs.rank
    src = ep.register(np.random.default_rng(7).integers(0, 256, size, dtype=np.uint8), "")
    inbox = ep.register(np.zeros(size, np.uint8), "w")
    rkey = [int(k) for k in bs.allgather(str(inbox.key).encode())][peer]
    iters = max(4, total // size)
    if bs.rank == 0:
        ep.write(peer, src, rkey, length=size).wait()  # warm-up
    bs.barrier()
    e0, o0 = thread_cpu()
    t0 = time.perf_counter()
    if bs.rank == 0:
        send_writes(ep, peer, src, rkey, size, iters, depth)
    else:
        ep.wait_remote_write(peer)
        ep.write(peer, src, rkey, length=0, imm=0).wait()
    sec = time.perf_counter() - t0
    e1, o1 = thread_cpu()
    ok = True if bs.rank == 0 else bool(np.array_equal(inbox.buffer, src.buffer))
    net = ep.stats()["peers"][peer].get("net", {})
    bs.barrier()
    return {"sec": sec, "eng": e1 - e0, "other": o1 - o0, "gb": size * iters / 1e9, "ok": ok,
            "retx": net.get("retransmits"), "timeouts": net.get("timeouts"), "acks_sent": net.get("acks_sent")}


def install(so: str) -> None:
    import importlib.util

    dst = importlib.util.find_spec("uccl._native").origin  # the extension the rank processes will load
    shutil.copy(so, dst + ".tmp")
    os.replace(dst + ".tmp", dst)  # a new inode: processes that mapped the old one are unaffected


def main(argv=None) -> None:
    from uccl.testing import netns

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("builds", nargs="+", help="paths of _native .so files, each optionally @VAR=VALUE,...")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--gib", type=float, default=1.0, help="GiB per round")
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--rate")
    ap.add_argument("--seg", action="store_true", help="cut GSO trains on the veth (as --loss does)")
    a = ap.parse_args(argv)
    ok, why = netns.available()
    if not ok:
        sys.exit(f"net_engine_ab: cannot create network namespaces here ({why})")
    res = {b: [] for b in a.builds}
    with netns.NetnsPair() as pair:
        if a.loss or a.seg:
            pair.segment_in_kernel(True)
        if a.loss:
            pair.set_loss(a.loss)
        if a.rate:
            pair.set_rate(a.rate)
        for _ in range(a.reps):
            for b in a.builds:
                so, _, envs = b.partition("@")
                env = dict(kv.split("=", 1) for kv in envs.split(",") if kv)
                install(so)
                snd, rcv = netns.run_pair(pair, f"{HERE}:rank", {"size": 16 << 20, "total": int(a.gib * (1 << 30)),
                                                                   "depth": 4}, env=env, timeout=300)
                row = {"gbps": snd["gb"] * 8 / snd["sec"], "eng": (snd["eng"] + rcv["eng"]) / snd["gb"],
                       "snd": snd["eng"] / snd["gb"], "rcv": rcv["eng"] / snd["gb"],
                       "all": (snd["eng"] + snd["other"] + rcv["eng"] + rcv["other"]) / snd["gb"],
                       "acks_per_gb": (rcv["acks_sent"] or 0) / snd["gb"]}
                res[b].append(row)
                print(f"{b:>24} load {open('/proc/loadavg').read().split()[0]} {row['gbps']:6.2f} Gbit/s  engines "
                      f"{row['eng']:.3f} (sender {row['snd']:.3f} receiver {row['rcv']:.3f})  process {row['all']:.3f}"
                      f" CPU s/GB  acks/GB {row['acks_per_gb']:.0f}  correct={rcv['ok']} retx={snd['retx']} "
                      f"timeouts={snd['timeouts']}", flush=True)
    for b, rows in res.items():
        def med(k):
            return statistics.median(r[k] for r in rows)

        def spread(k):
            return f"{min(r[k] for r in rows):.3f}-{max(r[k] for r in rows):.3f}"
        print(f"{b:>24} median {med('gbps'):.2f} Gbit/s ({spread('gbps')}); engines {med('eng'):.3f} CPU s/GB "
              f"({spread('eng')}), sender {med('snd'):.3f}, receiver {med('rcv'):.3f}; process {med('all'):.3f}")


if __name__ == "__main__":
    main()
