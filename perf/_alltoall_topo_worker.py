"""One rank of perf/alltoall_topo.py (started by `uccl-run --fabric`): all_to_all of each size
with each algorithm (a communicator per UCCL_ALGO value, interleaved per round so load hits
every one alike), every result checked. Time of a call = the slowest rank's average over a
burst of back-to-back calls started together after a barrier; rank 0 writes JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import numpy as np


def main() -> None:
    from uccl.collectives import Communicator
    from uccl.config import Config
    from uccl.transport.bootstrap import bootstrap_from_env

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", required=True, help="bytes per rank, comma separated")
    ap.add_argument("--algos", default="auto,aggregated,pairwise,direct")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    boot = bootstrap_from_env()
    cfg = Config.from_env()
    algos = args.algos.split(",")
    comms = {a: Communicator(boot.split(0), dataclasses.replace(cfg, algo=a)) for a in algos}
    ctl = comms[algos[0]]
    W, r = ctl.world_size, ctl.rank
    sizes = [int(s) for s in args.sizes.split(",")]
    times = {(a, s): [] for a in algos for s in sizes}
    wrong = {a: 0 for a in algos}
    for size in sizes:
        n = max(1, size // 4 // W) * W
        x = (np.arange(n, dtype=np.float32) + r * n).astype(np.float32)
        per = n // W
        want = np.concatenate([np.arange(q * n + r * per, q * n + (r + 1) * per, dtype=np.float32) for q in range(W)])
        iters = max(3, min(30, (1 << 20) // max(size, 1)))
        for a in algos:  # warm-up: registrations, first credits; and the check
            y = np.zeros_like(x)
            comms[a].all_to_all(x, y)
            wrong[a] += int(not np.array_equal(y, want))
        for _ in range(args.rounds):
            for a in algos:
                c, y = comms[a], np.empty_like(x)
                c.barrier()
                t0 = time.perf_counter()
                for _ in range(iters):
                    c.all_to_all(x, y)
                dt = np.array([(time.perf_counter() - t0) / iters])
                ctl.all_reduce(dt, op="max")
                times[(a, size)].append(float(dt[0]))
    picks = {s: ctl.algorithm("all_to_all", 4 * max(1, s // 4 // W) * W)[0] for s in sizes}
    bad = np.array([wrong[a] for a in algos], np.int64)
    ctl.all_reduce(bad)
    if r == 0:
        rows = [{"algo": a, "bytes": s, "median_s": statistics.median(times[(a, s)]), "seconds": times[(a, s)]}
                for s in sizes for a in algos]
        with open(args.out, "w") as f:
            json.dump({"world": W, "topology": str(ctl.topology()), "rows": rows, "auto_picks": picks,
                       "wrong": dict(zip(algos, bad.tolist()))}, f)
    ctl.barrier()


if __name__ == "__main__":
    main()
