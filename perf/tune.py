"""Measures the collective algorithms against each other and writes the tuner's
rules (uccl/collectives/tuning.json): for each world size, up to which message size
recursive doubling beats the ring for all_reduce, and the ring's best chunk size.

    python perf/tune.py --worlds 2 3 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import human  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "uccl", "collectives", "tuning.json")
SIZES = [8 << i for i in range(0, 20, 2)]  # 8 B .. 2 MiB
CHUNKS = [64 << 10, 128 << 10, 256 << 10, 512 << 10]
BIG = 16 << 20


def timed(comm, x, y, iters: int) -> float:
    comm.barrier()
    t = time.perf_counter()
    for _ in range(iters):
        comm.all_reduce(x, y)
    return (time.perf_counter() - t) / iters


def measure(ctx, rounds: int):
    from uccl.collectives import Communicator
    from uccl.config import Config

    def comm(**kw):
        cfg = Config.from_env()
        for k, v in kw.items():
            setattr(cfg, k, v)
        return Communicator(ctx.bootstrap.split(0), cfg)

    algos = {a: comm(algo=a) for a in ("ring", "recursive_doubling")}
    chunked = {c: comm(algo="ring", chunk_size=c) for c in CHUNKS}
    best: dict = {}
    for _ in range(rounds):  # interleaved rounds: noise hits every candidate alike
        for size in SIZES:
            x, y = np.ones(size // 4, np.float32), np.empty(size // 4, np.float32)
            iters = max(5, min(500, (64 << 20) // size))
            for name, c in algos.items():
                t = timed(c, x, y, iters)
                best[(name, size)] = min(best.get((name, size), 1e9), t)
        x, y = np.ones(BIG // 4, np.float32), np.empty(BIG // 4, np.float32)
        for chunk, c in chunked.items():
            t = timed(c, x, y, 5)
            best[("chunk", chunk)] = min(best.get(("chunk", chunk), 1e9), t)
    return {f"{k[0]}|{k[1]}": v for k, v in best.items()}


def rules_for(world: int, best: dict) -> tuple[list, list]:
    lines, crossover = [], 0
    for size in SIZES:
        ring, rd = best[f"ring|{size}"], best[f"recursive_doubling|{size}"]
        lines.append(f"  {human(size):>8}  ring {ring * 1e6:9.1f} us  recursive_doubling {rd * 1e6:9.1f} us")
        if rd < ring:
            crossover = size
    chunk = min(CHUNKS, key=lambda c: best[f"chunk|{c}"])
    lines.append("  ring at 16 MiB by chunk: " + ", ".join(f"{human(c)} {best[f'chunk|{c}'] * 1e3:.2f} ms"
                                                          for c in CHUNKS))
    rules = []
    if crossover:
        rules.append({"collective": "all_reduce", "world": world, "max_bytes": crossover,
                      "algo": "recursive_doubling"})
    rules.append({"collective": "all_reduce", "world": world, "max_bytes": 2**64 - 1, "algo": "ring",
                  "chunk_bytes": chunk})
    return rules, lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args(argv)
    from uccl.testing import run_ranks

    os.environ["UCCL_ALGO"] = "auto"
    rules = []
    for world in args.worlds:
        best = run_ranks(measure, world, (args.rounds,), timeout=1800)[0]
        world_rules, lines = rules_for(world, best)
        print(f"world {world}:")
        print("\n".join(lines))
        rules += world_rules
    with open(args.out, "w") as f:
        json.dump({"generated_by": "perf/tune.py", "host_cpus": os.cpu_count(), "rules": rules}, f, indent=2)
    print(f"wrote {len(rules)} rules to {os.path.normpath(args.out)}")


if __name__ == "__main__":
    main()
