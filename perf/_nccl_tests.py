"""The engine behind the nccl-tests-style scripts (all_reduce_perf.py, ...).

Same flags, columns and busbw factors as NVIDIA's nccl-tests; every size is timed
through uccl's Communicator and, with --compare, through torch's gloo ProcessGroup and
MPI (mpi4py) in the same run, size by size, so that the ratios hold on a noisy machine.

Launch with `mpirun -np N python perf/X_perf.py ...` (bootstrap through mpi4py), with
`uccl-run --nproc-per-node N perf/X_perf.py ...` / torchrun (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT: rendezvous through torch's store), or alone (a world of one).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import socket
import sys
import time
import warnings
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import human, parse_size, plot_series  # noqa: E402
from _nccl_backends import GlooBackend, MpiBackend, UcclBackend, Unsupported, World, setup_world  # noqa: E402
from _nccl_data import COLLS, DTYPES, NCCL_TYPE_NAME, OPS, Case, Coll, itemsize  # noqa: E402

# --------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------


def _agg(values: list[float], how: int) -> float:
    return {0: values[0], 1: sum(values) / len(values), 2: min(values), 3: max(values)}[how]


def bench_size(world: World, backends: list, coll: Coll, count: int, args, seed: int) -> dict:
    """One row of the tables: {backend: {"out": cell, "in": cell}}.

    Like nccl-tests, each cell times `iters` back-to-back calls after `warmup`, then
    checks one fresh call against the reference. With -R the cells take turns: R rounds,
    each timing one block of every backend and mode, so a burst of noise from elsewhere
    on the machine hits all of them alike; a cell keeps its fastest block."""
    cells, refused = [], {}
    for backend in backends:
        for mode, inplace in (("out", False), ("in", True)):
            case = Case.make(coll, count, world.rank, world.size, args.dtype, args.op, args.root, inplace)
            try:
                fn, result = backend.prepare(case)
                err = None
            except Unsupported as exc:
                fn, result, err = None, None, str(exc)
            cells.append((backend, mode, case, fn, result, err))
    # Every rank must agree before anyone runs (a backend may refuse on one rank only).
    for errs in (pickle.loads(b) for b in world.control.allgather(pickle.dumps([c[5] for c in cells]))):
        for k, e in enumerate(errs):
            if e:
                refused.setdefault(k, e)
    live = [k for k in range(len(cells)) if k not in refused]
    for k in live:
        backend, _, case, fn, _, _ = cells[k]
        if args.check:
            case.init(seed)
        backend.barrier()
        for _ in range(args.warmup):
            fn()
    blocks = {k: [] for k in live}
    for _ in range(args.repeat):
        for k in live:
            backend, fn = cells[k][0], cells[k][3]
            backend.barrier()
            t0 = time.perf_counter()
            for _ in range(args.iters):
                fn()
            blocks[k].append((time.perf_counter() - t0) / max(args.iters, 1))
    wrong = {k: 0 for k in live}
    for k in live:
        backend, _, case, fn, result, _ = cells[k]
        for j in range(args.check):
            case.init(seed + 1 + j)
            backend.barrier()
            fn()
            wrong[k] = case.wrong(result, seed + 1 + j)
            if wrong[k]:
                break
    gathered = [pickle.loads(b) for b in world.control.allgather(pickle.dumps((blocks, wrong)))]
    row = {b.name: {} for b in backends}
    for k, (backend, mode, case, _, _, _) in enumerate(cells):
        if k in refused:
            row[backend.name][mode] = {"time_us": None, "algbw": None, "busbw": None, "wrong": None,
                                       "note": refused[k]}
            continue
        # each block's time aggregated over ranks (-a), then the fastest block (-R; 1 = nccl-tests)
        sec = min(_agg([g[0][k][r] for g in gathered], args.average) for r in range(args.repeat))
        nbytes = max(case.sendcount, case.recvcount) * itemsize(case.dtype)
        algbw = nbytes / 1e9 / sec if sec > 0 else 0.0
        row[backend.name][mode] = {"time_us": sec * 1e6, "algbw": algbw, "busbw": algbw * coll.factor(case.nranks),
                                   "wrong": sum(g[1][k] for g in gathered) if args.check else None}
    return row


def sizes_from(args) -> list[int]:
    sizes, s = [], args.minbytes
    while s <= args.maxbytes:
        sizes.append(s)
        if args.stepfactor > 1:
            s *= args.stepfactor
        elif args.stepbytes > 0:
            s += args.stepbytes
        else:
            break
    return sizes


# --------------------------------------------------------------------------------------
# Output in nccl-tests' format
# --------------------------------------------------------------------------------------


def fmt_time(us: Optional[float]) -> str:
    if us is None:
        return "N/A"
    if us >= 10000:
        return f"{us:7.0f}"
    if us >= 100:
        return f"{us:7.1f}"
    return f"{us:7.2f}"


def header_lines() -> list[str]:
    return [
        "# %10s  %12s  %8s  %6s  %6s           out-of-place                       in-place          "
        % ("", "", "", "", ""),
        "# %10s  %12s  %8s  %6s  %6s  %7s  %6s  %6s %6s  %7s  %6s  %6s %6s"
        % ("size", "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong", "time", "algbw", "busbw",
           "#wrong"),
        "# %10s  %12s  %8s  %6s  %6s  %7s  %6s  %6s  %5s  %7s  %6s  %6s  %5s"
        % ("(B)", "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)", "(GB/s)", ""),
    ]


def cell(res: dict) -> str:
    if res["time_us"] is None:
        return "  %7s  %6s  %6s  %5s" % ("N/A", "N/A", "N/A", "N/A")
    wrong = "N/A" if res["wrong"] is None else str(res["wrong"])
    return "  %7s  %6.2f  %6.2f  %5s" % (fmt_time(res["time_us"]), res["algbw"], res["busbw"], wrong)


def row_line(row: dict, backend: str) -> str:
    return ("%12i  %12i  %8s  %6s  %6i" % (row["size"], row["count"], row["type"], row["redop"], row["root"])
            + cell(row[backend]["out"]) + cell(row[backend]["in"]))


def summary(rows: list[dict], backend: str) -> tuple[int, float]:
    bws = [row[backend][m]["busbw"] for row in rows for m in ("out", "in") if row[backend][m]["busbw"] is not None]
    errors = sum(1 for row in rows for m in ("out", "in") if row[backend][m]["wrong"])
    return errors, (sum(bws) / len(bws) if bws else 0.0)


def ratio(a: Optional[float], b: Optional[float]) -> str:
    return "%7.2f" % (a / b) if a and b else "%7s" % "N/A"


def ratio_lines(rows: list[dict], peer: str) -> list[str]:
    out = [f"# uccl busbw / {peer} busbw (above 1: uccl is faster)",
           "# %10s  %8s  %8s" % ("size", "out", "in")]
    for row in rows:
        out.append("%12i  %8s  %8s" % (row["size"], ratio(row["uccl"]["out"]["busbw"], row[peer]["out"]["busbw"]),
                                       ratio(row["uccl"]["in"]["busbw"], row[peer]["in"]["busbw"])))
    return out


def headline(coll: str, row: dict, names: list[str]) -> str:
    """One line per size that matters: each peer's busbw, out-of-place and in-place, and the ratios."""
    parts = []
    for mode, label in (("out", "out-of-place"), ("in", "in-place")):
        u = row["uccl"][mode]
        bits = [f"uccl {fmt_time(u['time_us']).strip()} us {u['busbw'] or 0:.3f} GB/s"]
        for peer in names[1:]:
            p = row[peer][mode]
            bits.append(f"{peer} {fmt_time(p['time_us']).strip()} us {p['busbw'] or 0:.3f} GB/s "
                        f"(x{ratio(u['busbw'], p['busbw']).strip()})")
        parts.append(f"{label}: " + ", ".join(bits))
    return f"# {coll} {human(row['size'])} busbw: " + " | ".join(parts)


def best_busbw(cellpair: dict) -> Optional[float]:
    vals = [cellpair[m]["busbw"] for m in ("out", "in") if cellpair[m]["busbw"] is not None]
    return max(vals) if vals else None


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def source_state() -> str:
    """The commit the measured code came from, and whether the tree had local changes."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "native", "uccl"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' + local changes in native/ or uccl/' if dirty else ''}" if head else "unknown"


def parse_args(coll: Coll, argv=None):
    ap = argparse.ArgumentParser(
        prog=f"{coll.name}_perf.py",
        description=f"nccl-tests-style {coll.name} benchmark for uccl (peers: --compare gloo,mpi).")
    ap.add_argument("-b", "--minbytes", type=parse_size, default=32 << 20, help="min size in bytes (32M)")
    ap.add_argument("-e", "--maxbytes", type=parse_size, default=32 << 20, help="max size in bytes (32M)")
    ap.add_argument("-i", "--stepbytes", type=parse_size, default=1 << 20, help="increment size (1M)")
    ap.add_argument("-f", "--stepfactor", type=int, default=1, help="increment factor (1: use -i)")
    ap.add_argument("-n", "--iters", type=int, default=20, help="iteration count (20)")
    ap.add_argument("-w", "--warmup_iters", dest="warmup", type=int, default=5, help="warmup iteration count (5)")
    ap.add_argument("-c", "--check", type=int, default=1, help="check iteration count (1; 0 = no check)")
    ap.add_argument("-o", "--op", default="sum", choices=OPS, help="reduction op (sum)")
    ap.add_argument("-d", "--datatype", default="float", choices=sorted(DTYPES), help="data type (float)")
    ap.add_argument("-r", "--root", type=int, default=0, help="root rank (0)")
    ap.add_argument("-a", "--average", type=int, default=3, choices=(0, 1, 2, 3),
                    help="time over ranks: 0=rank 0, 1=avg, 2=min, 3=max (3; nccl-tests defaults to 1)")
    ap.add_argument("-R", "--repeat", type=int, default=1,
                    help="R rounds of timed blocks, backends taking turns; each keeps its fastest (1: as nccl-tests)")
    ap.add_argument("--compare", default="", help="peers run in the same run: gloo,mpi")
    ap.add_argument("--json", help="write every row here (and a PNG plot beside it)")
    ap.add_argument("--plot", help="PNG of busbw against size (default: beside --json)")
    args = ap.parse_args(argv)
    args.dtype = DTYPES[args.datatype]
    args.peers = [p for p in (s.strip().lower() for s in args.compare.split(",")) if p]
    for p in args.peers:
        if p not in ("gloo", "mpi"):
            ap.error(f"--compare: unknown peer {p!r} (gloo, mpi)")
    if args.minbytes > args.maxbytes:
        ap.error(f"invalid sizes for 'minbytes' and 'maxbytes': {args.minbytes} > {args.maxbytes}")
    return args


def main(coll_name: str, argv=None) -> int:
    warnings.filterwarnings("ignore")
    coll = COLLS[coll_name]
    args = parse_args(coll, argv)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    world = setup_world("gloo" in args.peers, "mpi" in args.peers)
    lead = world.rank == 0
    say = (lambda *a: print(*a, flush=True)) if lead else (lambda *a: None)
    if not 0 <= args.root < world.size:
        say(f"# invalid root {args.root} for {world.size} ranks")
        return 2

    backends = [UcclBackend(world.uccl)]
    notes = []
    for p in args.peers:
        if p == "gloo":
            backends.append(GlooBackend(world.gloo_group))
        elif world.mpi_ok:
            backends.append(MpiBackend())
        else:
            notes.append("mpi skipped: not launched by mpirun")
    names = [b.name for b in backends]

    sizes = sizes_from(args)
    say(f"# nThread 1 nGpus 1 minBytes {args.minbytes} maxBytes {args.maxbytes} step: "
        f"{args.stepfactor if args.stepfactor > 1 else args.stepbytes}"
        f"({'factor' if args.stepfactor > 1 else 'bytes'}) warmup iters: {args.warmup} iters: {args.iters} "
        f"agg iters: 1 validation: {args.check} graph: 0"
        + (f" repeat: {args.repeat} (fastest block)" if args.repeat > 1 else ""))
    say("#")
    say(f"# {coll.name}: {world.size} ranks via {world.how}; backends: {', '.join(names)}; "
        f"time = {['rank 0', 'average', 'min', 'max'][args.average]} over ranks")
    lines = [pickle.loads(b) for b in world.control.allgather(pickle.dumps(
        f"#  Rank {world.rank:2d} Group  0 Pid {os.getpid():6d} on {socket.gethostname():>10s} device  cpu"))]
    for line in lines:
        say(line)
    say(f"# uccl source {source_state()}; load average before the run {load_before}")
    for note in notes:
        say(f"# {note}")
    say("#")
    say("# uccl")
    for h in header_lines():
        say(h)

    esize = itemsize(args.dtype)
    redop = args.op if coll.reduces else "none"
    root = args.root if coll.rooted else -1
    rows = []
    for i, size in enumerate(sizes):
        count = size // esize
        _, _, pc = coll.counts(count, world.size)
        sc, rc, _ = coll.counts(count, world.size)
        row = {"size": max(sc, rc) * esize, "count": pc, "type": NCCL_TYPE_NAME[args.dtype], "redop": redop,
               "root": root}
        row.update(bench_size(world, backends, coll, count, args, seed=i))
        rows.append(row)
        say(row_line(row, "uccl"))

    errors, avg = summary(rows, "uccl")
    say(f"# Out of bounds values : {errors} {'FAILED' if errors else 'OK'}")
    say(f"# Avg bus bandwidth    : {avg:g} ")
    say("#")
    failed = errors
    for peer in names[1:]:
        say("")
        say(f"# {peer} (same sizes, same run)")
        for h in header_lines():
            say(h)
        for row in rows:
            say(row_line(row, peer))
        perrs, pavg = summary(rows, peer)
        failed += perrs
        say(f"# Out of bounds values : {perrs} {'FAILED' if perrs else 'OK'}")
        say(f"# Avg bus bandwidth    : {pavg:g} ")
        say("#")
    for peer in names[1:]:
        say("")
        for line in ratio_lines(rows, peer):
            say(line)
    if len(names) > 1:
        say("")
        for target in (8, 16 << 20):
            row = next((r for r in rows if r["size"] == target), None)
            if row is not None:
                say(headline(coll.name, row, names))

    if lead and (args.json or args.plot):
        meta = {"benchmark": f"{coll.name}_perf", "collective": coll.name, "ranks": world.size, "launch": world.how,
                "backends": names, "dtype": args.dtype, "op": redop, "root": root, "iters": args.iters, "repeat": args.repeat,
                "warmup": args.warmup, "check": args.check, "time_over_ranks": ["rank0", "avg", "min", "max"][
                    args.average], "host": socket.gethostname(), "cpus": os.cpu_count(),
                "env": {k: v for k, v in os.environ.items() if k.startswith("UCCL_")},
                "when": time.strftime("%Y-%m-%d %H:%M:%S"), "uccl_source": source_state(),
                "loadavg_before": load_before}
        if args.json:
            with open(args.json, "w") as f:
                json.dump({**meta, "rows": rows}, f, indent=1)
        plot = args.plot or os.path.splitext(args.json)[0] + ".png"
        series = {}
        for name in names:
            for mode, label in (("out", "out-of-place"), ("in", "in-place")):
                pts = [(r["size"], r[name][mode]["busbw"]) for r in rows if r[name][mode]["busbw"]]
                if pts:
                    series[f"{name} {label}"] = pts
        plot_series(plot, f"{coll.name}, {world.size} ranks: busbw", series, ylabel="busbw (GB/s)")
        say(f"# wrote {args.json or ''} {plot}")
    world.control.barrier()
    if world.gloo_group is not None:
        # gloo's worker threads must be gone before the interpreter finalizes: one still
        # releasing a tensor then takes the GIL and aborts the process.
        import torch.distributed as dist

        dist.destroy_process_group()
    return 1 if failed else 0


def run(coll_name: str) -> None:
    sys.exit(main(coll_name))
