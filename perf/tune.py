"""Measures the collective algorithms against each other and writes the tuner's
rules: per transport (shm, net), world size and collective, which algorithm is fastest up to which message size, and the best chunk
size (and, for the direct algorithms, number of channels) for large messages.

    python perf/tune.py --worlds 2 3 4 --transports shm net

Candidates are measured in interleaved rounds (noise hits every one alike) and the
fastest time of the rounds counts; a size keeps the smaller size's algorithm unless
another is more than 5 % faster (near ties are noise). all_to_all gets one rule for all
sizes: ranks may pass different sizes, so its choice must not depend on them (the
algorithm that loses the least time against the best one, summed over the sizes, wins).

Tables are per host size: uccl/collectives/tuning.json was measured on 2 CPUs,
tuning-<N>cpus.json on N; a host loads the one measured on the largest host not larger
than itself (more CPUs per rank make more channels pay). Those net rules are measured
over loopback.

With --fabric SPEC (needs root) the net rules are measured on an emulated fabric
instead: ranks on different hosts (network namespaces) behind rate-limited uplinks,
launched by `uccl-run --fabric` (which declares hosts and leaves), the hierarchical
algorithms among the candidates, fewer sizes. Each rule is keyed by the topology's shape
(ranks per host, hosts per leaf) and link ("network"), so it applies only there, before
the loopback rules; they go to uccl/collectives/tuning-fabric.json, which the tuner loads
with the others.

    sudo python perf/tune.py --fabric hosts=4,leaves=2,spines=2,rate=100mbit --ranks-per-host 1 2
    sudo python perf/tune.py --fabric hosts=2,leaves=2,spines=1,rate=1gbit --ranks-per-host 2 --quick --out /tmp/t.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace

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


HIERARCHICAL = ("all_reduce", "all_gather", "reduce_scatter", "broadcast")
TIE = 0.05


@dataclass(frozen=True)
class Plan:
    """What one measurement covers: sizes (each timed over about `budget` bytes, 3 to 200
    calls), the large size at which chunks (and the direct algorithms' channels) are
    chosen, with `big_iters` calls each, and the candidates per collective."""

    sizes: tuple = tuple(SIZES)
    big: int = BIG
    big_iters: int = BIG_ITERS
    budget: int = 32 << 20
    chunks: tuple = tuple(CHUNKS)
    candidates: dict = field(default_factory=lambda: dict(CANDIDATES))


LOOPBACK = Plan()
# On a rate-limited fabric large calls take 100s of ms: fewer sizes and calls, and the
# hierarchical algorithms join where a collective has one.
FABRIC = Plan(sizes=(1 << 10, 16 << 10, 128 << 10, 512 << 10, 2 << 20, 4 << 20), big=4 << 20, big_iters=3,
              budget=8 << 20, chunks=(128 << 10, 512 << 10),
              candidates={c: a + (["hierarchical"] if c in HIERARCHICAL else []) for c, a in CANDIDATES.items()})
QUICK = replace(FABRIC, sizes=(4 << 10, 1 << 20), big=1 << 20, big_iters=1, budget=1 << 20, chunks=(256 << 10,),
                candidates={"all_reduce": ["ring", "hierarchical"]})


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


def measure(ctx, rounds: int, collectives: list, plan: Plan = LOOPBACK):
    from uccl.collectives import Communicator
    from uccl.config import Config

    def comm(**kw):
        cfg = Config.from_env()
        for k, v in kw.items():
            setattr(cfg, k, v)
        return Communicator(ctx.bootstrap.split(0), cfg)

    comms = {a: comm(algo=a) for a in sorted({a for c in collectives for a in plan.candidates[c]})}
    best: dict = {}
    for _ in range(rounds):
        for coll in collectives:
            for size in plan.sizes:
                iters = max(3, min(200, plan.budget // size))
                for algo in plan.candidates[coll]:
                    t = timed(comms[algo], call(comms[algo], coll, size), iters)
                    best[(coll, algo, size)] = min(best.get((coll, algo, size), 1e9), t)
            for algo in plan.candidates[coll]:
                for chunk in plan.chunks:
                    c = comms.get((algo, chunk)) or comm(algo=algo, chunk_size=chunk)
                    comms[(algo, chunk)] = c  # a communicator per setting, shared by the collectives
                    t = timed(c, call(c, coll, plan.big), plan.big_iters)
                    best[(coll, algo, "chunk", chunk)] = min(best.get((coll, algo, "chunk", chunk), 1e9), t)
            if "direct" in plan.candidates[coll]:
                for ch in channel_choices(ctx.world_size):
                    c = comms.get(("channels", ch)) or comm(algo="direct", chunk_size=256 << 10, channels=ch)
                    comms[("channels", ch)] = c
                    key = (coll, "direct", "channels", ch)
                    best[key] = min(best.get(key, 1e9), timed(c, call(c, coll, plan.big), plan.big_iters))
    return {"|".join(map(str, k)): v for k, v in best.items()}


def rules_for(coll: str, world: int, transport: str, best: dict, plan: Plan = LOOPBACK,
              keys: dict = None) -> tuple[list, list]:
    """The rules for one case from its timings; `keys` (topology, ranks_per_host,
    hosts_per_leaf, link) go into every rule, so that they apply only where those fit."""
    algos = plan.candidates[coll]
    sizes, big = plan.sizes, plan.big
    channels = channel_choices(world)
    t = {(a, s): best[f"{coll}|{a}|{s}"] for a in algos for s in sizes}
    lines = [f"  {coll} {human(s):>8}  " + "  ".join(f"{a} {t[(a, s)] * 1e6:9.1f} us" for a in algos)
             for s in sizes]

    def chunk_of(algo):
        return min(plan.chunks, key=lambda c: best[f"{coll}|{algo}|chunk|{c}"])

    def tuned(rule):
        rule["chunk_bytes"] = chunk_of(rule["algo"])
        if rule["algo"] == "direct":
            # Fewest channels within 5 % of the fastest: more threads cost CPU, and on a
            # small host the differences between them are within run-to-run noise.
            times = {k: best[f"{coll}|direct|channels|{k}"] for k in channels}
            rule["channels"] = min(k for k in channels if times[k] <= 1.05 * min(times.values()))
        return rule

    base = {"collective": coll, "world": world, "transport": transport, **(keys or {})}
    if coll == "all_to_all":
        # Time lost against the best at each size, summed: what a job calling every size
        # once would lose. (Summed ratios let the many tiny sizes outvote the large ones.)
        lost = {a: sum(t[(a, s)] - min(t[(b, s)] for b in algos) for s in sizes) for a in algos}
        algo = min(algos, key=lost.get)
        lines.append(f"  {coll}: time lost over all sizes " + ", ".join(f"{a} {v * 1e6:.1f} us"
                                                                       for a, v in lost.items()))
        return [tuned(dict(base, max_bytes=ALL_SIZES, algo=algo))], lines
    winners: list = []
    for s in sizes:
        fastest = min(algos, key=lambda a: t[(a, s)])
        # A size keeps the smaller size's winner unless another is more than TIE faster:
        # near ties are noise, and rules that flip back and forth on them help no one.
        keep = winners and t[(winners[-1], s)] <= (1 + TIE) * t[(fastest, s)]
        winners.append(winners[-1] if keep else fastest)
    rules = []
    for i, (size, algo) in enumerate(zip(sizes, winners)):
        last = i + 1 == len(sizes)
        if last or winners[i + 1] != algo:
            rule = dict(base, max_bytes=ALL_SIZES if last else size, algo=algo)
            rules.append(tuned(rule) if last or size >= (1 << 20) else rule)
    lines.append(f"  {coll} at {human(big)} by chunk: " + "; ".join(
        f"{a}: " + ", ".join(f"{human(c)} {best[f'{coll}|{a}|chunk|{c}'] * 1e3:.2f} ms" for c in plan.chunks)
        for a in algos))
    if "direct" in algos:
        lines.append(f"  {coll} direct at {human(big)} by channels: " + ", ".join(
            f"{k} {best[f'{coll}|direct|channels|{k}'] * 1e3:.2f} ms" for k in channels))
    return rules, lines


def fabric_worker(args) -> None:
    """One rank under `uccl-run --fabric`: measures, and rank 0 writes the timings and the
    shape the tuner sees here to --worker-out."""
    from types import SimpleNamespace

    from uccl.collectives import Communicator
    from uccl.transport.bootstrap import bootstrap_from_env

    boot = bootstrap_from_env()
    ctx = SimpleNamespace(bootstrap=boot, rank=boot.rank, world_size=boot.world_size)
    probe = Communicator(boot.split(0))
    shape = probe.tune_shape()
    if shape["link"] != "network":
        raise SystemExit(f"tune: rank {boot.rank}: the ranks do not meet over a network ({shape})")
    best = measure(ctx, args.rounds, args.collectives, QUICK if args.quick else FABRIC)
    if boot.rank == 0:
        with open(args.worker_out, "w") as f:
            json.dump({"world": boot.world_size, "shape": shape, "best": best}, f)
    probe.barrier()  # over the channels: rank 0 holds the bootstrap's store, so no store call after this


def measure_on_fabric(args, ranks_per_host: int, fab) -> dict:
    """Runs this script's worker on every rank of the fabric; its result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "best.json")
        cmd = [sys.executable, "-m", "uccl.launch.run", "--fabric", fab.name, "--nproc-per-node",
               str(ranks_per_host), os.path.abspath(__file__), "--worker-out", out, "--rounds", str(args.rounds),
               "--collectives", *args.collectives] + (["--quick"] if args.quick else [])
        env = {k: v for k, v in os.environ.items() if k not in ("UCCL_ALGO", "UCCL_TRANSPORT", "UCCL_TOPOLOGY")}
        proc = subprocess.run(cmd, env=env, timeout=args.timeout, capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(out):
            raise SystemExit(f"tune: the ranks on {fab.name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        with open(out) as f:
            return json.load(f)


def fabric_rules(args) -> list:
    """The timings measured on the fabric, per ranks per host."""
    from uccl.fabric import Fabric, FabricSpec
    from uccl.fabric import emulator as fabmod

    fabmod.handle_signals()
    timings = []
    with Fabric(FabricSpec.parse(args.fabric)) as fab:
        for rph in args.ranks_per_host:
            res = measure_on_fabric(args, rph, fab)
            timings.append({"ranks_per_host": rph, "world": res["world"], "shape": res["shape"],
                            "seconds": res["best"]})
    return timings


def rules_from_timings(timings: list, plan: Plan) -> list:
    """The keyed rules of every measured case. A collective without a hierarchical
    algorithm is never 'layered' to the tuner: its rules keep the shape and link only."""
    rules = []
    for m in timings:
        print(f"{m['ranks_per_host']} ranks per host (world {m['world']}, {m['shape']}):")
        for coll in [c for c in CANDIDATES if any(k.startswith(c + "|") for k in m["seconds"])]:
            keys = {k: v for k, v in m["shape"].items() if k != "topology" or coll in HIERARCHICAL}
            found, lines = rules_for(coll, m["world"], "net", m["seconds"], plan, keys)
            print("\n".join(lines))
            print("  -> " + "; ".join(f"{r['algo']} up to "
                                      f"{human(r['max_bytes']) if r['max_bytes'] < ALL_SIZES else 'any'}"
                                      for r in found))
            rules += found
    return rules


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--transports", nargs="+", default=["shm", "net"], choices=["shm", "net"])
    ap.add_argument("--collectives", nargs="+", default=None, choices=list(CANDIDATES),
                    help="default: all (--quick: all_reduce)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=None, help="default: the shipped table for this host's CPU count "
                                                "(--fabric: tuning-fabric.json)")
    ap.add_argument("--merge", action="store_true",
                    help="replace only the measured (collective, world, transport, shape) rules of the table at "
                         "--out, keep the others")
    ap.add_argument("--fabric", metavar="SPEC", default=None,
                    help="measure the net rules on an emulated fabric built for this run (needs root), e.g. "
                         "hosts=4,leaves=2,spines=2,rate=100mbit")
    ap.add_argument("--ranks-per-host", type=int, nargs="+", default=[1, 2], help="with --fabric")
    ap.add_argument("--quick", action="store_true", help="with --fabric: two sizes, all_reduce, ring vs "
                                                         "hierarchical, one round (a smoke test)")
    ap.add_argument("--timeout", type=float, default=3600, help="with --fabric: per ranks-per-host run (s)")
    ap.add_argument("--rederive", action="store_true",
                    help="no measurement: the rules of the --fabric table at --out again, from the timings it keeps")
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)  # a rank under uccl-run --fabric
    args = ap.parse_args(argv)
    if args.collectives is None:
        args.collectives = list(QUICK.candidates if args.quick else CANDIDATES)
    if args.quick:
        args.rounds = 1
        if any(c not in QUICK.candidates for c in args.collectives):
            ap.error(f"--quick measures only {list(QUICK.candidates)}")
    if args.worker_out:
        return fabric_worker(args)
    from uccl.collectives.communicator import host_cpus

    cpus = host_cpus()
    default = ("tuning-fabric.json" if args.fabric or args.rederive else "tuning.json" if cpus <= 2
               else f"tuning-{cpus}cpus.json")
    args.out = args.out or os.path.join(TABLES, default)
    from uccl.testing import run_ranks

    command = "perf/tune.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.rederive:  # the rules again from the timings a --fabric table keeps
        with open(args.out) as f:
            table = json.load(f)
        table["rules"] = rules_from_timings(table["timings"], QUICK if "--quick" in table["generated_by"] else FABRIC)
        table["rules_by"] = command
        with open(args.out, "w") as f:
            json.dump(table, f, indent=2)
        print(f"wrote {len(table['rules'])} rules to {os.path.normpath(args.out)}")
        return
    rules, timings = [], []
    if args.fabric:
        timings = fabric_rules(args)
        rules = rules_from_timings(timings, QUICK if args.quick else FABRIC)
    for transport in [] if args.fabric else args.transports:
        for world in args.worlds:
            env = {"UCCL_TRANSPORT": transport, "UCCL_ALGO": "auto"}
            best = run_ranks(measure, world, (args.rounds, args.collectives), env=env, timeout=3600)[0]
            print(f"{transport}, world {world}:")
            for coll in args.collectives:
                found, lines = rules_for(coll, world, transport, best)
                print("\n".join(lines))
                rules += found
    table = {"generated_by": command, "host_cpus": cpus, "load_before": os.getloadavg()[0], "rules": rules}
    if args.fabric:
        table.update(fabric=args.fabric, timings=timings)  # the rules can be re-derived from these
    if args.merge and os.path.exists(args.out):
        table = merged(args.out, rules, command, table["load_before"])
    with open(args.out, "w") as f:
        json.dump(table, f, indent=2)
    print(f"wrote {len(rules)} rules to {os.path.normpath(args.out)}")


def merged(path: str, rules: list, command: str, load: float) -> dict:
    """The table at `path` with its rules for every (collective, world, transport, shape) that
    `rules` covers replaced by those (the tuner takes the first rule that fits, and the
    rules of one case stay in order of size)."""
    with open(path) as f:
        table = json.load(f)
    case = lambda r: (r["collective"], r.get("world", 0), r["transport"], r.get("topology", ""),  # noqa: E731
                      r.get("ranks_per_host", 0), r.get("hosts_per_leaf", 0), r.get("link", ""))
    measured = {case(r) for r in rules}
    table["rules"] = [r for r in table["rules"] if case(r) not in measured] + rules
    table.setdefault("merged", []).append({"by": command, "load_before": load})
    return table


if __name__ == "__main__":
    main()
