"""One rank of perf/tp_perf.py: a torch.distributed program (started by uccl-run, on one
host or one rank per emulated host) timing a sequence-parallel transformer MLP block and
its ops, fused and unfused, on the uccl group and on a gloo group over the same ranks.

Each timed iteration starts from a barrier (gloo); its time is the slowest rank's."""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import threading
import time

import torch
import torch.distributed as dist

from uccl.overlap import tp
from uccl.overlap._group import all_gather_single, reduce_scatter_single

TARGET_S = 1.0   # seconds of iterations per variant, for short ones
MAX_ITERS = 40
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Timer:
    def __init__(self, gloo, iters: int, warmup: int) -> None:
        self.gloo, self.iters, self.warmup = gloo, iters, warmup

    def __call__(self, variants: dict) -> dict:
        """Median over iterations of the slowest rank's seconds, per variant. The variants
        take turns within each iteration, so a change in the host's load hits them alike;
        short ones get more iterations (about TARGET_S each, at most MAX_ITERS)."""
        t0 = time.perf_counter()
        for fn in variants.values():
            for _ in range(self.warmup):
                fn()
        per_round = torch.tensor([(time.perf_counter() - t0) / max(self.warmup, 1)], dtype=torch.float64)
        dist.all_reduce(per_round, op=dist.ReduceOp.MAX, group=self.gloo)  # every rank runs as many
        iters = max(self.iters, min(MAX_ITERS, math.ceil(TARGET_S * len(variants) / max(per_round.item(), 1e-6))))
        times = torch.zeros(len(variants), iters, dtype=torch.float64)
        for i in range(iters):
            for v, fn in enumerate(variants.values()):
                dist.barrier(group=self.gloo)
                t0 = time.perf_counter()
                fn()
                times[v, i] = time.perf_counter() - t0
        dist.all_reduce(times, op=dist.ReduceOp.MAX, group=self.gloo)
        return {name: statistics.median(times[v].tolist()) for v, name in enumerate(variants)}


def with_splits(value: int, fn):
    """fn run with UCCL_TP_SPLITS=value (0: the plan's choice; -1: the unfused path)."""
    def run():
        os.environ["UCCL_TP_SPLITS"] = str(value)
        try:
            return fn()
        finally:
            os.environ["UCCL_TP_SPLITS"] = "0"
    return run


def block_ops(x_shard, w1, w2, group):
    """The sequence-parallel MLP: all-gather+GEMM in, GELU, GEMM+reduce-scatter out; as
    one fused op (parallel_mlp, token pieces out and result pieces back) and as the two
    fused ops in turn (the GELU between them runs with no communication in flight)."""
    def ag():
        return tp.all_gather_matmul(x_shard, [w1], 0, group, return_a=False)[1][0]

    def two_ops():
        h = torch.nn.functional.gelu(ag())
        return tp.matmul_reduce_scatter(h, w2, "sum", 0, group)

    def block():
        return tp.parallel_mlp(x_shard, w1, w2, torch.nn.functional.gelu, group)
    return ag, two_ops, block


def pieced(x, w1, w2, pieces: int):
    """The block's GEMMs over all tokens, `pieces` token pieces at a time (as parallel_mlp runs them)."""
    out = torch.empty(x.shape[0], w2.shape[1], dtype=x.dtype)
    cuts = tp.plan.bounds(x.shape[0], pieces)

    def run():
        for lo, hi in cuts:
            torch.mm(torch.nn.functional.gelu(torch.mm(x[lo:hi], w1)), w2, out=out[lo:hi])
    return run


def under_traffic(compute, comm, n_comm: int, gloo, iters: int) -> float:
    """Median (slowest rank) of `compute`'s seconds while a thread runs `comm` n_comm times
    on every rank (the same count everywhere, so the collectives match): how much the
    engine thread and the packet forwarding slow the GEMMs down."""
    times = torch.zeros(iters, dtype=torch.float64)
    for i in range(iters):
        dist.barrier(group=gloo)
        th = threading.Thread(target=lambda: [comm() for _ in range(n_comm)])
        th.start()
        t0 = time.perf_counter()
        compute()
        times[i] = time.perf_counter() - t0
        th.join()
    dist.all_reduce(times, op=dist.ReduceOp.MAX, group=gloo)
    return statistics.median(times.tolist())


def measure(args, ffn: int, world: int, rank: int, uccl, gloo, timer: Timer) -> dict:
    dtype = DTYPES[args.dtype]
    g = torch.Generator().manual_seed(rank)
    tokens, hidden = args.tokens, args.hidden
    x_shard = torch.randn(tokens // world, hidden, generator=g).to(dtype)
    w1 = (torch.randn(hidden, ffn // world, generator=g) / hidden ** 0.5).to(dtype)
    w2 = (torch.randn(ffn // world, hidden, generator=g) / ffn ** 0.5).to(dtype)
    x_full = torch.randn(tokens, hidden, generator=g).to(dtype)
    h_full = torch.randn(tokens, ffn // world, generator=g).to(dtype)
    gathered = torch.empty(tokens, hidden, dtype=dtype)
    scattered = torch.empty(tokens // world, hidden, dtype=dtype)
    residual, norm_w = torch.randn(tokens, hidden, generator=g).to(dtype), torch.ones(hidden, dtype=dtype)

    def rs_op(group):
        return lambda: tp.matmul_reduce_scatter(h_full, w2, "sum", 0, group)

    ag_u, two_u, block_u = block_ops(x_shard, w1, w2, uccl)
    ag_g, two_g, block_g = block_ops(x_shard, w1, w2, gloo)
    block_compute = lambda: torch.mm(torch.nn.functional.gelu(torch.mm(x_full, w1)), w2)  # noqa: E731
    compute = {
        "all_gather_matmul": lambda: torch.mm(x_full, w1),
        "matmul_reduce_scatter": lambda: torch.mm(h_full, w2),
        "block": block_compute,
        "block_two_ops": block_compute,
        "all_reduce_rmsnorm": lambda: tp.ops.rmsnorm(x_full + residual, norm_w, 1e-6),
    }

    def comm(group):
        both = lambda: (all_gather_single(gathered, x_shard, group),  # noqa: E731
                        reduce_scatter_single(scattered, x_full, group))
        return {"block": both, "block_two_ops": both,
            "all_gather_matmul": lambda: all_gather_single(gathered, x_shard, group),
            "matmul_reduce_scatter": lambda: reduce_scatter_single(scattered, x_full, group),
            "all_reduce_rmsnorm": lambda: dist.all_reduce(x_full.clone(), group=group),
        }

    def op(group):
        ag, two, block = (ag_u, two_u, block_u) if group is uccl else (ag_g, two_g, block_g)
        return {"all_gather_matmul": ag, "matmul_reduce_scatter": rs_op(group), "block": block,
                "block_two_ops": two,
                "all_reduce_rmsnorm": lambda: tp.all_reduce_rmsnorm(x_full, residual, norm_w, 1e-6, group)}

    out = {}
    comm_u, comm_g, op_u, op_g = comm(uccl), comm(gloo), op(uccl), op(gloo)
    for name in args.ops.split(","):
        pieces = [2] if name == "all_reduce_rmsnorm" else args.pieces
        variants = {"compute_only_s": compute[name], "comm_only_uccl_s": comm_u[name],
                    "comm_only_gloo_s": comm_g[name], "unfused_uccl_s": with_splits(-1, op_u[name]),
                    "unfused_gloo_s": op_g[name], "fused_s": with_splits(0, op_u[name]),
                    **{f"pieces_{p}": with_splits(p, op_u[name]) for p in pieces}}
        if name == "block":  # the same GEMMs in the fused op's token pieces, no communication
            op_u[name]()
            variants["compute_pieced_s"] = pieced(x_full, w1, w2, world * max(1, tp.last_plan().pieces))
        times = timer(variants)
        row = {k: v for k, v in times.items() if not k.startswith("pieces_")}
        if "compute_pieced_s" in row:
            # computing in pieces can be faster than the whole (the hidden rows stay in cache):
            # the exposed communication is judged against the faster of the two
            row["compute_whole_s"] = row["compute_only_s"]
            row["compute_only_s"] = min(row["compute_only_s"], row["compute_pieced_s"])
        row["pieces_s"] = {str(p): times[f"pieces_{p}"] for p in pieces}
        plans = []
        if name == "block_two_ops":  # the block's two ops, as planned
            x = torch.nn.functional.gelu(ag_u())
            plans.append(tp.last_plan())
            tp.matmul_reduce_scatter(x, w2, "sum", 0, uccl)
            plans.append(tp.last_plan())
        else:
            op_u[name]()
            plans.append(tp.last_plan())
        row["plan"] = [f"{p.op}: {p.path} x{p.pieces} ({p.reason})" for p in plans]
        if name == "block" and args.traffic:
            n_comm = math.ceil(1.3 * row["compute_only_s"] / max(row["comm_only_uccl_s"], 1e-6)) + 1
            row["compute_under_traffic_s"] = under_traffic(compute[name], comm_u[name], n_comm, gloo,
                                                           max(3, args.iters))
            row["compute_slowdown_under_traffic"] = row["compute_under_traffic_s"] / row["compute_only_s"]
        row["serial_s"] = row["compute_only_s"] + row["comm_only_uccl_s"]
        row["exposed_comm_s"] = row["fused_s"] - row["compute_only_s"]
        row["overlap_efficiency"] = 1 - row["exposed_comm_s"] / row["comm_only_uccl_s"]
        row["fused_speedup_vs_unfused_uccl"] = row["unfused_uccl_s"] / row["fused_s"]
        row["fused_speedup_vs_unfused_gloo"] = row["unfused_gloo_s"] / row["fused_s"]
        row["compute_to_comm"] = row["compute_only_s"] / row["comm_only_uccl_s"]
        best = min(row["pieces_s"], key=row["pieces_s"].get)
        row["best_forced_pieces"] = int(best)
        row["best_forced_speedup_vs_unfused_uccl"] = row["unfused_uccl_s"] / row["pieces_s"][best]
        out[name] = row
        if rank == 0:
            print(f"ffn {ffn} {name}: compute {row['compute_only_s'] * 1e3:.1f} ms, comm {row['comm_only_uccl_s'] * 1e3:.1f}"
                  f" ms, unfused uccl {row['unfused_uccl_s'] * 1e3:.1f} ms, fused {row['fused_s'] * 1e3:.1f} ms "
                  f"(x{row['fused_speedup_vs_unfused_uccl']:.2f}; {row['plan']})", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--ffn", default="1024,4096")
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    ap.add_argument("--ops", default="all_gather_matmul,matmul_reduce_scatter,block,block_two_ops,all_reduce_rmsnorm")
    ap.add_argument("--traffic", type=int, default=1, help="1: also time the block's compute under traffic")
    ap.add_argument("--pieces", default="1,2,4,8")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads per rank")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    args.pieces = [int(p) for p in args.pieces.split(",")]
    torch.set_num_threads(args.threads)
    dist.init_process_group(backend="uccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    uccl = dist.group.WORLD
    gloo = dist.new_group(backend="gloo")
    transport = tp.ops.group_transport(tp.ops.uccl_process_group(uccl))
    timer = Timer(gloo, args.iters, args.warmup)
    rows = {ffn: measure(args, ffn, world, rank, uccl, gloo, timer) for ffn in (int(f) for f in args.ffn.split(","))}
    if rank == 0:
        with open(args.out, "w") as f:
            json.dump({"world": world, "transport": transport, "tokens": args.tokens,
                       "hidden": args.hidden, "dtype": args.dtype, "threads": args.threads, "iters": args.iters,
                       "by_ffn": rows}, f, indent=1)
    dist.barrier(group=gloo)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
