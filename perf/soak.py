"""Soak: random collectives through torch.distributed (backend "uccl") over the net channel
with kernel-injected loss, for a given duration; every result checked, resources tracked.

    sudo python perf/soak.py --minutes 30 --json perf/results/soak_30min.json

Builds an emulated fabric (uccl.fabric.emulator.Fabric: one namespace per host, `--loss`
percent of packets dropped at the leaf by nftables numgen) and starts one rank per host
with UCCL_TRANSPORT=net. Each rank runs the same random sequence of collectives
(all_reduce, all_gather, reduce_scatter, all_to_all with uneven splits, broadcast, reduce;
sizes from 0 to `--max-bytes`, odd sizes included; float32/float64/int32/bfloat16/float16;
sum/min/max/prod/avg where the dtype allows) on groups of 2..world ranks. Every rank
derives every rank's input from the shared seed and the operation's index, so it computes
the expected result itself (numpy, float64) and compares: exact for every op but avg
(inputs are small integers, so sums and products are exact in every dtype).

Each rank samples, every `--sample` seconds, its resident memory (VmRSS), open file
descriptors (/proc/self/fd), threads (/proc/self/task) and operations done. The verdict:
zero wrong results, zero errors, and flat resources after warm-up: "flat" means the last
quarter's maximum RSS is within `--rss-tolerance-mib` of the second quarter's maximum, and
the last quarter's maximum fds and threads are no higher than the second quarter's. Exit
status 0 when the verdict holds, 1 otherwise (2: could not run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "reduce")
DTYPES = ("float32", "float64", "int32", "bfloat16", "float16")
REDUCE_OPS = ("sum", "min", "max", "prod", "avg")
ITEM = {"float32": 4, "float64": 8, "int32": 4, "bfloat16": 2, "float16": 2}
AVG_RTOL = {"float32": 1e-6, "float64": 1e-12, "bfloat16": 1e-2, "float16": 1e-3}


# ---- the random program (identical on every rank) -------------------------------------

def plan(seed: int, index: int, world: int, max_bytes: int) -> dict:
    """Operation `index` of the run: what, on which group, of what size and type."""
    rng = random.Random(f"{seed}/{index}")
    op = rng.choice(OPS)
    k = rng.randint(2, world)
    dtype = rng.choice(DTYPES)
    reduce = rng.choice(REDUCE_OPS) if op in ("all_reduce", "reduce_scatter", "reduce") else None
    if reduce == "avg" and (dtype == "int32" or op == "reduce"):
        reduce = "sum"  # avg: floating point only, and torch's reduce has no avg
    max_elems = max(1, max_bytes // ITEM[dtype])
    if op in ("all_gather", "reduce_scatter"):
        max_elems = max(1, max_elems // k)  # the count per rank; the whole is k times more
    if rng.random() < 0.05:
        n = 0
    else:  # log-uniform: mostly small, some large, odd sizes as likely as even ones
        n = int(math.exp(rng.uniform(0.0, math.log(max_elems + 1)))) or 1
    p = {"index": index, "op": op, "k": k, "dtype": dtype, "reduce": reduce, "n": n,
         "root": rng.randrange(k)}
    if op == "all_to_all":  # splits[src][dst]: elements rank src sends to rank dst (uneven)
        p["splits"] = [[rng.randrange(n // k + 2) for _ in range(k)] for _ in range(k)]
    return p


def rank_input(seed: int, p: dict, rank: int):
    """Rank `rank`'s input to operation p, as float64: small integers, exact in every dtype
    (products of 4 ranks' values in {-2,-1,1,2} stay within bfloat16's exact integers)."""
    import numpy as np

    rng = np.random.default_rng([seed, p["index"], rank])
    n = p["n"]
    if p["op"] == "all_to_all":
        n = sum(p["splits"][rank])
    elif p["op"] == "reduce_scatter":
        n = n * p["k"]
    if p["reduce"] == "prod":
        return rng.choice(np.array([-2.0, -1.0, 1.0, 2.0]), size=n)
    return rng.integers(-8, 9, size=n).astype(np.float64)


def expected(seed: int, p: dict, me: int):
    """What rank `me` (group rank) must hold after operation p, as float64 (None: unspecified)."""
    import numpy as np

    k = p["k"]
    ins = [rank_input(seed, p, r) for r in range(k)]
    op = p["op"]
    if op in ("all_reduce", "reduce", "reduce_scatter"):
        if op == "reduce" and me != p["root"]:
            return None
        stacked = np.stack(ins) if ins[0].size else np.zeros((k, 0))
        red = {"sum": np.sum, "min": np.min, "max": np.max, "prod": np.prod, "avg": np.mean}[p["reduce"]]
        out = red(stacked, axis=0)
        if op == "reduce_scatter":
            return out[me * p["n"]:(me + 1) * p["n"]]
        return out
    if op == "all_gather":
        return np.concatenate(ins)
    if op == "broadcast":
        return ins[p["root"]]
    if op == "all_to_all":
        pieces = []
        for src in range(k):
            off = sum(p["splits"][src][:me])
            pieces.append(ins[src][off:off + p["splits"][src][me]])
        return np.concatenate(pieces)
    raise ValueError(op)


def check(got, want, p: dict) -> tuple[bool, str]:
    import numpy as np

    if got.shape != want.shape:
        return False, f"shape {got.shape} != {want.shape}"
    if p["reduce"] == "avg":
        ok = np.allclose(got, want, rtol=AVG_RTOL[p["dtype"]], atol=AVG_RTOL[p["dtype"]])
    else:
        ok = np.array_equal(got, want)
    if ok:
        return True, ""
    bad = np.nonzero(~np.isclose(got, want, rtol=0, atol=0))[0]
    i = int(bad[0]) if bad.size else 0
    return False, f"{bad.size} of {want.size} elements differ, first at {i}: {got[i]} != {want[i]}"


# ---- one rank -------------------------------------------------------------------------

def _status() -> dict:
    fields = {"VmRSS:": "rss_kib", "RssAnon:": "rss_anon_kib", "RssShmem:": "rss_shmem_kib"}
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":", 1)[0] + ":"
            if key in fields:
                out[fields[key]] = int(line.split()[1])
    return out


def resources() -> dict:
    """Resident memory (VmRSS and its anonymous and shared-memory parts), open fds, threads.
    `rss_raw_kib` is as found; the others are read after malloc_trim(0) hands the heap's free
    pages back, so that what the allocator keeps from the last large reference buffers (tens
    of MiB, different at every sample) does not hide or fake growth: what stays is live."""
    import ctypes

    raw = _status()["rss_kib"]
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the figures are as found
    out = {"rss_raw_kib": raw, **_status()}
    out["fds"] = len(os.listdir("/proc/self/fd"))
    out["threads"] = len(os.listdir("/proc/self/task"))
    return out


def run_one(dist, torch, groups, seed: int, p: dict, me_global: int) -> tuple[bool, str]:
    """Runs operation p if this rank is in its group; (ok, why)."""
    k = p["k"]
    if me_global >= k:
        return True, ""
    group = groups[k]
    dtype = getattr(torch, p["dtype"])
    mine = torch.from_numpy(rank_input(seed, p, me_global)).to(dtype)
    op = p["op"]
    red = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX,
           "prod": dist.ReduceOp.PRODUCT, "avg": dist.ReduceOp.AVG}.get(p["reduce"])
    if op == "all_reduce":
        out = mine
        dist.all_reduce(out, op=red, group=group)
    elif op == "reduce":
        out = mine
        dist.reduce(out, dst=p["root"], op=red, group=group)
    elif op == "broadcast":
        out = mine
        dist.broadcast(out, src=p["root"], group=group)
    elif op == "all_gather":
        out = torch.empty(p["n"] * k, dtype=dtype)
        dist.all_gather_into_tensor(out, mine, group=group)
    elif op == "reduce_scatter":
        out = torch.empty(p["n"], dtype=dtype)
        dist.reduce_scatter_tensor(out, mine, op=red, group=group)
    elif op == "all_to_all":
        recv = [p["splits"][src][me_global] for src in range(k)]
        out = torch.empty(sum(recv), dtype=dtype)
        dist.all_to_all_single(out, mine, output_split_sizes=recv, input_split_sizes=p["splits"][me_global],
                               group=group)
    else:
        raise ValueError(op)
    want = expected(seed, p, me_global)
    if want is None:
        return True, ""
    return check(out.to(torch.float64).numpy(), want, p)


def worker(args) -> int:
    import datetime

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    log = open(os.path.join(args.out_dir, f"rank{rank}.jsonl"), "w", buffering=1)

    def emit(kind: str, **kw) -> None:
        log.write(json.dumps({"kind": kind, "rank": rank, **kw}) + "\n")

    dist.init_process_group("uccl", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=args.op_timeout))
    groups = {world: dist.group.WORLD}
    for k in range(2, world):  # every rank creates every group, in the same order
        groups[k] = dist.new_group(list(range(k)))
    flag = torch.zeros(1, dtype=torch.int32)
    start = time.monotonic()
    deadline = start + args.minutes * 60
    next_sample = start
    done = wrong = 0
    index = 0
    try:
        while True:
            if index % args.check_every == 0:  # rank 0 decides when the run ends, for everyone
                flag.fill_(1 if time.monotonic() < deadline else 0)
                dist.broadcast(flag, src=0)
                if not int(flag.item()):
                    break
            now = time.monotonic()
            if now >= next_sample:
                emit("sample", t=now - start, ops=done, wrong=wrong, **resources())
                next_sample = now + args.sample
            p = plan(args.seed, index, world, args.max_bytes)
            try:
                ok, why = run_one(dist, torch, groups, args.seed, p, rank)
            except Exception as exc:
                emit("error", index=index, plan=p, error=f"{type(exc).__name__}: {exc}"[:2000])
                return 1
            if rank < p["k"]:
                done += 1
                if not ok:
                    wrong += 1
                    if wrong <= 20:
                        emit("wrong", index=index, plan={k: v for k, v in p.items() if k != "splits"}, why=why)
            index += 1
        emit("sample", t=time.monotonic() - start, ops=done, wrong=wrong, **resources())
        emit("end", ops=done, wrong=wrong, planned=index)
    finally:
        log.flush()
    dist.destroy_process_group()
    return 0


# ---- the driver: a fabric, one rank per host, the verdict -----------------------------

def quarter(samples: list, q: int, total: float) -> list:
    return [s for s in samples if q * total / 4 <= s["t"] < (q + 1) * total / 4 + (1e-9 if q == 3 else 0)]


def rss_slope(samples: list) -> float:
    """Least-squares growth of resident memory (bytes per operation) over the samples after
    warm-up (the first quarter): a leak that costs something per operation shows here long
    before it shows against the quarter-max tolerance; a flat process gives about 0."""
    total = samples[-1]["t"] if samples else 0.0
    pts = [(s["ops"], s["rss_kib"] * 1024.0) for s in samples if s["t"] >= total / 4]
    if len(pts) < 3:
        return 0.0
    mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
    var = sum((x - mx) ** 2 for x, _ in pts)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in pts) / var


def verdict(ranks: dict, rss_tol_mib: float, slope_limit: float = 256.0) -> dict:
    """Per rank and overall: zero wrong, zero errors, resources flat after warm-up."""
    out = {"ok": True, "reasons": [], "ranks": {}}
    for r, info in sorted(ranks.items()):
        samples = info["samples"]
        why = []
        if info.get("errors"):
            why.append(f"{len(info['errors'])} error(s): {info['errors'][0]['error'][:300]}")
        if info.get("end") is None:
            why.append("did not finish")
        if info["wrong"]:
            why.append(f"{info['wrong']} wrong result(s)")
        flat = {}
        total = samples[-1]["t"] if samples else 0.0
        q2 = quarter(samples, 1, total)
        q4 = quarter(samples, 3, total)
        if len(q2) < 1 or len(q4) < 1:
            why.append(f"too few samples ({len(samples)}) to judge flatness")
        else:
            rss2, rss4 = max(s["rss_kib"] for s in q2) / 1024, max(s["rss_kib"] for s in q4) / 1024
            flat["rss_mib_q2_max"], flat["rss_mib_q4_max"] = round(rss2, 2), round(rss4, 2)
            if rss4 - rss2 > rss_tol_mib:
                why.append(f"RSS grew: last quarter's max {rss4:.1f} MiB vs second quarter's {rss2:.1f} MiB "
                           f"(tolerance {rss_tol_mib} MiB)")
            slope = rss_slope(samples)
            flat["rss_bytes_per_op"] = round(slope, 1)
            if slope > slope_limit:
                why.append(f"RSS grows {slope:.0f} bytes per operation after warm-up (limit {slope_limit:g})")
            for key in ("fds", "threads"):
                a, b = max(s[key] for s in q2), max(s[key] for s in q4)
                flat[f"{key}_q2_max"], flat[f"{key}_q4_max"] = a, b
                if b > a:
                    why.append(f"{key} grew: last quarter's max {b} vs second quarter's {a}")
        out["ranks"][r] = {"ok": not why, "reasons": why, **flat}
        if why:
            out["ok"] = False
            out["reasons"] += [f"rank {r}: {w}" for w in why]
    return out


def read_rank(path: str) -> dict:
    info = {"samples": [], "wrong_examples": [], "errors": [], "end": None, "wrong": 0}
    if not os.path.exists(path):
        return info
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            kind = rec.pop("kind")
            rec.pop("rank", None)
            if kind == "sample":
                info["samples"].append(rec)
                info["wrong"] = rec["wrong"]
            elif kind == "wrong":
                info["wrong_examples"].append(rec)
            elif kind == "error":
                info["errors"].append(rec)
            elif kind == "end":
                info["end"] = rec
                info["wrong"] = rec["wrong"]
    return info


def plot(path: str, ranks: dict, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    for r, info in sorted(ranks.items()):
        s = info["samples"]
        if not s:
            continue
        t = [x["t"] / 60 for x in s]
        axes[0].plot(t, [x["rss_kib"] / 1024 for x in s], label=f"rank {r}")
        axes[1].plot(t, [x["fds"] for x in s], label=f"rank {r}")
        axes[2].plot(t, [x["threads"] for x in s], label=f"rank {r}")
        rate = [0.0] + [(b["ops"] - a["ops"]) / max(1e-9, b["t"] - a["t"]) for a, b in zip(s, s[1:])]
        axes[3].plot(t, rate, label=f"rank {r}")
    for ax, label in zip(axes, ("RSS (MiB)", "open fds", "threads", "ops/s")):
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    axes[0].set_title(title)
    axes[-1].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def driver(args) -> int:
    sys.path.insert(0, ROOT)
    from uccl.fabric.emulator import Fabric, FabricSpec, available, handle_signals
    from uccl.fabric.ranks import rank_env

    ok, why = available()
    if not ok:
        print(f"soak: cannot run: {why}", file=sys.stderr)
        return 2
    handle_signals()
    world = args.world or random.Random(args.seed).randint(2, 4)
    out_dir = tempfile.mkdtemp(prefix="uccl-soak-")
    # two leaves: a one-leaf fabric does not build today (routes are added in spines it never made)
    spec = FabricSpec(hosts=world, leaves=2, spines=1, rate=None, loss=args.loss)
    print(f"soak: {args.minutes:g} min, world {world}, {args.loss:g}% loss, seed {args.seed}, "
          f"sizes 0..{args.max_bytes} B", flush=True)
    started = time.time()
    procs = []
    with Fabric(spec) as fab:
        port = 20000 + random.randrange(20000)
        env = {"UCCL_TRANSPORT": "net", "OMP_NUM_THREADS": "1", "UCCL_MTU": str(spec.mtu - 28)}
        argv = [sys.executable, "-u", os.path.abspath(__file__), "--worker", "--out-dir", out_dir,
                "--minutes", str(args.minutes), "--seed", str(args.seed), "--max-bytes", str(args.max_bytes),
                "--sample", str(args.sample), "--op-timeout", str(args.op_timeout),
                "--check-every", str(args.check_every)]
        for host in range(world):
            e = {**env, **rank_env(fab, host, 0, 1, port)}
            errf = open(os.path.join(out_dir, f"rank{host}.stderr"), "w")
            procs.append(fab.popen(host, argv, env=e, stdout=errf, stderr=subprocess.STDOUT, cwd=ROOT))
        limit = args.minutes * 60 + args.op_timeout + 120
        end = time.monotonic() + limit
        try:
            while any(p.poll() is None for p in procs) and time.monotonic() < end:
                if any(p.returncode not in (None, 0) for p in procs):
                    # a failed rank: give the others the op timeout to fail too, then stop
                    end = min(end, time.monotonic() + args.op_timeout + 10)
                time.sleep(0.5)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        drops = fab.loss_drops()
    ranks = {r: read_rank(os.path.join(out_dir, f"rank{r}.jsonl")) for r in range(world)}
    for r, p in enumerate(procs):
        ranks[r]["exit"] = p.returncode
        if p.returncode != 0:
            with open(os.path.join(out_dir, f"rank{r}.stderr")) as f:
                ranks[r]["stderr_tail"] = f.read()[-3000:]
    shutil.rmtree(out_dir, ignore_errors=True)  # everything it held is in `ranks` now
    v = verdict(ranks, args.rss_tolerance_mib, args.rss_bytes_per_op)
    for r, p in enumerate(procs):
        if p.returncode != 0:
            v["ok"] = False
            v["reasons"].append(f"rank {r} exited with status {p.returncode}")
    ops = sum((ranks[r]["end"] or {}).get("ops", ranks[r]["samples"][-1]["ops"] if ranks[r]["samples"] else 0)
              for r in ranks)
    wrong = sum(ranks[r]["wrong"] for r in ranks)
    summary = {"minutes": args.minutes, "world": world, "loss_percent": args.loss, "seed": args.seed,
               "max_bytes": args.max_bytes, "started": started, "wall_s": round(time.time() - started, 1),
               "ops_total": ops, "wrong_total": wrong, "packets_dropped_by_loss_rule": drops,
               "rss_tolerance_mib": args.rss_tolerance_mib, "rss_bytes_per_op_limit": args.rss_bytes_per_op,
               "verdict": v, "ranks": ranks}
    report(summary)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    png = args.plot or (os.path.splitext(args.json)[0] + ".png" if args.json else None)
    if png:
        plot(png, ranks, f"uccl soak: world {world}, net channel, {args.loss:g}% loss, "
                         f"{ops} ops, {wrong} wrong")
    return 0 if v["ok"] else 1


def report(summary: dict) -> None:
    ranks, v = summary["ranks"], summary["verdict"]
    for r in sorted(ranks):
        s = ranks[r]["samples"]
        if s:
            a, b = s[0], s[-1]
            print(f"rank {r}: {b['ops']} ops in {b['t']:.0f} s ({b['ops'] / max(b['t'], 1e-9):.1f}/s), "
                  f"{ranks[r]['wrong']} wrong; RSS {a['rss_kib'] / 1024:.1f} -> {b['rss_kib'] / 1024:.1f} MiB, "
                  f"fds {a['fds']} -> {b['fds']}, threads {a['threads']} -> {b['threads']}; "
                  f"flat: {v['ranks'][r]}")
        else:
            print(f"rank {r}: no samples (exit {ranks[r].get('exit')})")
        for e in ranks[r]["errors"][:2]:
            print(f"rank {r} error at op {e['index']}: {e['error'][:500]}")
        for w in ranks[r]["wrong_examples"][:3]:
            print(f"rank {r} wrong at op {w['index']} {w['plan']}: {w['why']}")
    print(f"loss rule dropped {summary['packets_dropped_by_loss_rule']} packets; "
          f"{summary['ops_total']} ops, {summary['wrong_total']} wrong")
    print("VERDICT: " + ("PASS" if v["ok"] else "FAIL: " + "; ".join(v["reasons"])), flush=True)


def judge(args) -> int:
    with open(args.judge) as f:
        summary = json.load(f)
    ranks = summary["ranks"]
    v = verdict(ranks, args.rss_tolerance_mib, args.rss_bytes_per_op)
    for r, info in ranks.items():
        if info.get("exit") not in (0, None):
            v["ok"] = False
            v["reasons"].append(f"rank {r} exited with status {info['exit']}")
    summary.update(verdict=v, rss_tolerance_mib=args.rss_tolerance_mib, rss_bytes_per_op_limit=args.rss_bytes_per_op)
    report(summary)
    with open(args.json or args.judge, "w") as f:
        json.dump(summary, f, indent=1)
    png = args.plot or os.path.splitext(args.json or args.judge)[0] + ".png"
    plot(png, ranks, f"uccl soak: world {summary['world']}, net channel, {summary['loss_percent']:g}% loss, "
                     f"{summary['ops_total']} ops, {summary['wrong_total']} wrong")
    return 0 if v["ok"] else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--world", type=int, default=0, help="ranks (2-4); 0: chosen from the seed")
    ap.add_argument("--loss", type=float, default=1.0, help="percent of packets dropped in the fabric")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-bytes", type=int, default=4 << 20, help="largest buffer of one rank")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between resource samples")
    ap.add_argument("--op-timeout", type=float, default=60.0, help="the process group's timeout (s)")
    ap.add_argument("--check-every", type=int, default=10, help="ops between the end-of-run checks")
    ap.add_argument("--rss-tolerance-mib", type=float, default=8.0)
    ap.add_argument("--rss-bytes-per-op", type=float, default=256.0,
                    help="largest RSS growth per operation after warm-up that still counts as flat")
    ap.add_argument("--judge", metavar="JSON", help="judge a finished run's figures again (and replot); no run")
    ap.add_argument("--json", help="write the figures here (and the plot next to it, .png)")
    ap.add_argument("--plot", help="the plot's path (default: next to --json)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.judge:
        return judge(args)
    if args.world and not 2 <= args.world <= 4:
        ap.error("--world must be 2, 3 or 4")
    return driver(args)


if __name__ == "__main__":
    sys.exit(main())
