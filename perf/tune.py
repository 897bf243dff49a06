"""Measures the collective algorithms against each other and writes the tuner's
rules: per transport (shm, net), world size and collective, which algorithm is fastest up to which message size, and the best chunk
size (and, for the direct algorithms, number of channels) for large messages.

    python perf/tune.py --worlds 2 3 4 --transports shm net

Candidates are measured in interleaved rounds (noise hits every one alike) and the
fastest time of the rounds counts. all_to_all gets one rule for all sizes: ranks may
pass different sizes, so its choice must not depend on them (the algorithm that loses the
least time against the best one, summed over the sizes, wins).

Tables are per host size: uccl/collectives/tuning.json was measured on 2 CPUs,
tuning-<N>cpus.json on N; a host loads the one measured on the largest host not larger
than itself (more CPUs per rank make more channels pay).
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

TABLES = os.path.join(os.path.dirname(__file__), "..", "uccl", "collectives")
SIZES = [8 << i for i in range(0, 22, 2)]  # 8 B .. 8 MiB
CHUNKS = [64 << 10, 128 << 10, 256 << 10, 512 << 10]


def channel_choices(world: int) -> list:
    """Threads per rank tried for the direct algorithms: up to the host's CPUs per rank."""
    from uccl.collectives.communicator import host_cpus

    cpus_per_rank = max(2, host_cpus() // world)
    return [c for c in (1, 2, 4, 8, 16) if c <= cpus_per_rank]


BIG = 16 << 20
BIG_ITERS = 8  # per setting and round; with 3, channel choices flipped between runs on a 2-core host
ALL_SIZES = 2**64 - 1
CANDIDATES = {
    "all_reduce": ["ring", "recursive_doubling", "direct"],
    "all_gather": ["ring", "direct"],
    "reduce_scatter": ["ring", "direct"],
    "all_to_all": ["pairwise", "direct"],
    "broadcast": ["chain", "direct"],
}


def call(comm, collective: str, nbytes: int):
    """A closure running `collective` on buffers whose tuner size is `nbytes`."""
    W = comm.world_size
    n = max(1, nbytes // 4 // W) * W  # float32 elements, a multiple of W
    x, y = np.ones(n, np.float32), np.empty(n, np.float32)
    if collective == "all_reduce":
        return lambda: comm.all_reduce(x, y)
    if collective == "all_gather":
        return lambda: comm.all_gather(x[: n // W], y)
    if collective == "reduce_scatter":
        return lambda: comm.reduce_scatter(x, y[: n // W])
    if collective == "all_to_all":
        return lambda: comm.all_to_all(x, y)
    return lambda: comm.broadcast(x, root=0)


def timed(comm, fn, iters: int) -> float:
    comm.barrier()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    comm.barrier()
    return (time.perf_counter() - t) / iters


def measure(ctx, rounds: int, collectives: list):
    from uccl.collectives import Communicator
    from uccl.config import Config

    def comm(**kw):
        cfg = Config.from_env()
        for k, v in kw.items():
            setattr(cfg, k, v)
        return Communicator(ctx.bootstrap.split(0), cfg)

    comms = {a: comm(algo=a) for a in sorted({a for c in collectives for a in CANDIDATES[c]})}
    best: dict = {}
    for _ in range(rounds):
        for coll in collectives:
            for size in SIZES:
                iters = max(3, min(200, (32 << 20) // size))
                for algo in CANDIDATES[coll]:
                    t = timed(comms[algo], call(comms[algo], coll, size), iters)
                    best[(coll, algo, size)] = min(best.get((coll, algo, size), 1e9), t)
            for algo in CANDIDATES[coll]:
                for chunk in CHUNKS:
                    c = comms.get((algo, chunk)) or comm(algo=algo, chunk_size=chunk)
                    comms[(algo, chunk)] = c  # a communicator per setting, shared by the collectives
                    t = timed(c, call(c, coll, BIG), BIG_ITERS)
                    best[(coll, algo, "chunk", chunk)] = min(best.get((coll, algo, "chunk", chunk), 1e9), t)
            if "direct" in CANDIDATES[coll]:
                for ch in channel_choices(ctx.world_size):
                    c = comms.get(("channels", ch)) or comm(algo="direct", chunk_size=256 << 10, channels=ch)
                    comms[("channels", ch)] = c
                    key = (coll, "direct", "channels", ch)
                    best[key] = min(best.get(key, 1e9), timed(c, call(c, coll, BIG), BIG_ITERS))
    return {"|".join(map(str, k)): v for k, v in best.items()}


def rules_for(coll: str, world: int, transport: str, best: dict) -> tuple[list, list]:
    algos = CANDIDATES[coll]
    channels = channel_choices(world)
    t = {(a, s): best[f"{coll}|{a}|{s}"] for a in algos for s in SIZES}
    lines = [f"  {coll} {human(s):>8}  " + "  ".join(f"{a} {t[(a, s)] * 1e6:9.1f} us" for a in algos)
             for s in SIZES]
    big_algo = min(algos, key=lambda a: best[f"{coll}|{a}|{BIG}"] if f"{coll}|{a}|{BIG}" in best else t[(a, SIZES[-1])])

    def chunk_of(algo):
        return min(CHUNKS, key=lambda c: best[f"{coll}|{algo}|chunk|{c}"])

    def tuned(rule):
        rule["chunk_bytes"] = chunk_of(rule["algo"])
        if rule["algo"] == "direct":
            # Fewest channels within 5 % of the fastest: more threads cost CPU, and on a
            # small host the differences between them are within run-to-run noise.
            times = {k: best[f"{coll}|direct|channels|{k}"] for k in channels}
            rule["channels"] = min(k for k in channels if times[k] <= 1.05 * min(times.values()))
        return rule

    base = {"collective": coll, "world": world, "transport": transport}
    if coll == "all_to_all":
        # Time lost against the best at each size, summed: what a job calling every size
        # once would lose. (Summed ratios let the many tiny sizes outvote the large ones.)
        lost = {a: sum(t[(a, s)] - min(t[(b, s)] for b in algos) for s in SIZES) for a in algos}
        algo = min(algos, key=lost.get)
        lines.append(f"  {coll}: time lost over all sizes " + ", ".join(f"{a} {v * 1e6:.1f} us"
                                                                       for a, v in lost.items()))
        return [tuned(dict(base, max_bytes=ALL_SIZES, algo=algo))], lines
    winners = [min(algos, key=lambda a: t[(a, s)]) for s in SIZES]
    rules = []
    for i, (size, algo) in enumerate(zip(SIZES, winners)):
        last = i + 1 == len(SIZES)
        if last or winners[i + 1] != algo:
            rule = dict(base, max_bytes=ALL_SIZES if last else size, algo=algo)
            rules.append(tuned(rule) if last or size >= (1 << 20) else rule)
    lines.append(f"  {coll} at {human(BIG)} by chunk: " + "; ".join(
        f"{a}: " + ", ".join(f"{human(c)} {best[f'{coll}|{a}|chunk|{c}'] * 1e3:.2f} ms" for c in CHUNKS)
        for a in algos))
    if "direct" in algos:
        lines.append(f"  {coll} direct at {human(BIG)} by channels: " + ", ".join(
            f"{k} {best[f'{coll}|direct|channels|{k}'] * 1e3:.2f} ms" for k in channels))
    return rules, lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--transports", nargs="+", default=["shm", "net"], choices=["shm", "net"])
    ap.add_argument("--collectives", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=None, help="default: the shipped table for this host's CPU count")
    ap.add_argument("--merge", action="store_true",
                    help="replace only the measured (collective, world, transport) rules of the table at --out, "
                         "keep the others")
    args = ap.parse_args(argv)
    from uccl.collectives.communicator import host_cpus

    cpus = host_cpus()
    args.out = args.out or os.path.join(TABLES, "tuning.json" if cpus <= 2 else f"tuning-{cpus}cpus.json")
    from uccl.testing import run_ranks

    rules = []
    for transport in args.transports:
        for world in args.worlds:
            env = {"UCCL_TRANSPORT": transport, "UCCL_ALGO": "auto"}
            best = run_ranks(measure, world, (args.rounds, args.collectives), env=env, timeout=3600)[0]
            print(f"{transport}, world {world}:")
            for coll in args.collectives:
                found, lines = rules_for(coll, world, transport, best)
                print("\n".join(lines))
                rules += found
    command = "perf/tune.py " + " ".join(argv if argv is not None else sys.argv[1:])
    table = {"generated_by": command, "host_cpus": cpus, "load_before": os.getloadavg()[0], "rules": rules}
    if args.merge and os.path.exists(args.out):
        table = merged(args.out, rules, command, table["load_before"])
    with open(args.out, "w") as f:
        json.dump(table, f, indent=2)
    print(f"wrote {len(rules)} rules to {os.path.normpath(args.out)}")


def merged(path: str, rules: list, command: str, load: float) -> dict:
    """The table at `path` with its rules for every (collective, world, transport) that
    `rules` covers replaced by those (the tuner takes the first rule that fits, and the
    rules of one case stay in order of size)."""
    with open(path) as f:
        table = json.load(f)
    case = lambda r: (r["collective"], r.get("world", 0), r["transport"])  # noqa: E731
    measured = {case(r) for r in rules}
    table["rules"] = [r for r in table["rules"] if case(r) not in measured] + rules
    table.setdefault("merged", []).append({"by": command, "load_before": load})
    return table


if __name__ == "__main__":
    main()
