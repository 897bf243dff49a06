"""Point-to-point latency and bandwidth between two ranks.

shm (default): two local processes over the shared-memory channel; the machine's
memcpy bandwidth, measured in the same run, is printed as the ceiling.
net: see --transport net (two network namespaces, a plain TCP stream as the peer).

    python perf/p2p_perf.py -b 8 -e 64M -f 4 --json perf/results/p2p_shm.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import parse_size, pingpong_one_way_us, plot_series, size_range  # noqa: E402


def memcpy_gbps(size: int, iters: int) -> float:
    """Single-thread memcpy between two warm buffers: the ceiling for one copy."""
    src, dst = np.ones(max(size, 1), np.uint8), np.zeros(max(size, 1), np.uint8)
    np.copyto(dst, src)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(iters):
            np.copyto(dst, src)
        best = min(best, (time.perf_counter() - t) / iters)
    return size / best / 1e9


def iters_for(size: int, budget_bytes: int = 1 << 30, lo: int = 10, hi: int = 20000) -> int:
    return int(min(hi, max(lo, budget_bytes // max(size, 1))))


def shm_rank(ctx, sizes, warmup):
    from uccl import _native
    from uccl.transport import Endpoint

    os.sched_setaffinity(0, {ctx.rank % os.cpu_count()})
    ep = Endpoint(ctx.bootstrap)
    peer = 1 - ctx.rank
    top = max(sizes)
    src = ep.register(np.ones(top, np.uint8), "")
    inbox = ep.register(np.zeros(top, np.uint8), "w")
    keys = [int(k) for k in ctx.bootstrap.allgather(str(inbox.key).encode())]
    rkey = keys[peer]
    rows = []
    for size in sizes:
        iters = iters_for(size)
        # Latency: ping-pong of writes-with-immediate; one-way = round trip / 2.
        lat_iters = min(iters, 2000)
        ctx.bootstrap.barrier()
        one_way_us = pingpong_one_way_us(ep, peer, ctx.rank == 0, src, rkey, size, lat_iters, warmup)
        ctx.bootstrap.barrier()
        native_us = _native.tools.pingpong_one_way_us(ep._native, peer, ctx.rank == 0, src.key, rkey, size, lat_iters,
                                                warmup)
        # Bandwidth: rank 0 streams writes, rank 1 acknowledges the last one.
        ctx.bootstrap.barrier()
        t0 = time.perf_counter()
        if ctx.rank == 0:
            for i in range(iters):
                ep.write(peer, src, rkey, length=size, imm=i if i == iters - 1 else None).wait()
            ep.wait_remote_write(peer)
        else:
            ep.wait_remote_write(peer)
            ep.write(peer, src, rkey, length=0, imm=0).wait()
        seconds = time.perf_counter() - t0
        if ctx.rank == 0:
            rows.append({"size": size, "latency_us": native_us, "python_latency_us": one_way_us, "bw_GBps": size * iters / seconds / 1e9,
                         "memcpy_GBps": memcpy_gbps(size, iters_for(size, 1 << 28)), "iters": iters})
    ctx.bootstrap.barrier()
    return rows


def run_shm(args) -> list[dict]:
    from uccl.testing import run_ranks

    sizes = size_range(args.minbytes, args.maxbytes, args.stepfactor)
    return run_ranks(shm_rank, 2, (sizes, args.warmup), timeout=3600)[0]


def print_table(rows: list[dict]) -> None:
    print("one-way latency: timed in native code (transport) and through the Python API")
    print(f"{'size':>12} {'one-way us':>11} {'via Python':>11} {'GB/s':>8} {'memcpy GB/s':>12} {'of memcpy':>10}")
    for r in rows:
        print(f"{r['size']:>12} {r['latency_us']:>11.2f} {r['python_latency_us']:>11.2f} {r['bw_GBps']:>8.2f} "
              f"{r['memcpy_GBps']:>12.2f} {r['bw_GBps'] / r['memcpy_GBps']:>9.0%}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-b", "--minbytes", type=parse_size, default=8)
    ap.add_argument("-e", "--maxbytes", type=parse_size, default=64 << 20)
    ap.add_argument("-f", "--stepfactor", type=int, default=4)
    ap.add_argument("-w", "--warmup", type=int, default=20)
    ap.add_argument("--transport", choices=["shm", "net"], default="shm")
    ap.add_argument("--json", help="write results here (a PNG plot is written beside it)")
    args, rest = ap.parse_known_args(argv)
    if args.transport == "net":
        from _netns_p2p import main as net_main  # the net channel's benchmark (namespaces, TCP peer)

        return net_main(argv)
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    rows = run_shm(args)
    print_table(rows)
    at16 = next((r for r in rows if r["size"] == 16 << 20), None)
    if at16:
        print(f"16 MiB: {at16['bw_GBps']:.2f} GB/s = {at16['bw_GBps'] / at16['memcpy_GBps']:.0%} of memcpy; "
              f"8 B one-way latency {rows[0]['latency_us']:.2f} us")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "p2p_perf", "transport": "shm", "rows": rows}, f, indent=2)
        plot_series(args.json.replace(".json", ".png"), "uccl p2p over shared memory",
                    {"uccl write": [(r["size"], r["bw_GBps"]) for r in rows],
                     "memcpy (ceiling)": [(r["size"], r["memcpy_GBps"]) for r in rows]},
                    ylabel="GB/s")


if __name__ == "__main__":
    main()
