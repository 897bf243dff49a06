"""One rank of perf/moe_perf.py (started by uccl-run, locally or one rank per fabric host):
times one MoE layer several ways on the same tokens, checks the results agree, and has
rank 0 write JSON.

    uccl overlapped       Buffer.dispatch_compute_combine
    uccl sequential       Buffer.dispatch -> experts -> Buffer.combine
    megatron (uccl|gloo)  permute, all_to_all_single with splits, sort by expert, experts, and back
    phases                dispatch, compute, combine each between barriers (all ranks at once)
    low latency           low_latency_dispatch + low_latency_combine of --ll-tokens tokens

A time is the slowest rank's (max over ranks), the median over iterations.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time

import torch
import torch.distributed as dist


def routing(rank: int, T: int, E: int, k: int, H: int, dtype):
    g = torch.Generator().manual_seed(100 + rank)
    x = torch.randn(T, H, generator=g).to(dtype)
    idx = torch.rand(T, E, generator=g).topk(k, dim=1).indices
    w = torch.rand(T, k, generator=g)
    return x, idx, w / w.sum(1, keepdim=True)


class Experts:
    """The local experts' FFNs: gelu(x W1) W2, E_loc of them."""

    def __init__(self, rank: int, E_loc: int, H: int, F: int, dtype) -> None:
        g = torch.Generator().manual_seed(7 + rank)
        self.w1 = [(torch.randn(H, F, generator=g) / H ** 0.5).to(dtype) for _ in range(E_loc)]
        self.w2 = [(torch.randn(F, H, generator=g) / F ** 0.5).to(dtype) for _ in range(E_loc)]

    def __call__(self, e: int, t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(t @ self.w1[e]) @ self.w2[e]


def megatron_layer(x, idx, w, experts, E: int, group) -> torch.Tensor:
    """Megatron's all-to-all dispatcher: one row per (token, expert), all_to_all_single with splits."""
    R = dist.get_world_size(group)
    E_loc = E // R
    T, H = x.shape
    flat = idx.flatten()
    order = torch.argsort(flat, stable=True)           # permute: rows sorted by expert
    token_of = order // idx.shape[1]
    permuted = x.index_select(0, token_of)
    per_expert = torch.bincount(flat, minlength=E)
    recv_counts = torch.empty_like(per_expert)
    dist.all_to_all_single(recv_counts, per_expert, group=group)  # [src, local expert]
    send_splits = per_expert.view(R, E_loc).sum(1).tolist()
    recv_splits = recv_counts.view(R, E_loc).sum(1).tolist()
    recv = torch.empty(sum(recv_splits), H, dtype=x.dtype)
    dist.all_to_all_single(recv, permuted, recv_splits, send_splits, group=group)
    # sort by expert (the received chunks are source-major), compute, and back
    chunk_expert = torch.arange(E_loc).repeat(R)
    sizes = recv_counts.tolist()
    chunk_order = torch.argsort(chunk_expert, stable=True).tolist()
    chunks = recv.split(sizes)
    by_expert = [chunks[i] for i in chunk_order]
    out_chunks = [None] * len(chunks)
    for i, c in zip(chunk_order, by_expert):
        out_chunks[i] = experts(int(chunk_expert[i]), c) if c.shape[0] else c
    y = torch.cat(out_chunks) if out_chunks else recv
    back = torch.empty(permuted.shape[0], H, dtype=x.dtype)
    dist.all_to_all_single(back, y.contiguous(), send_splits, recv_splits, group=group)
    out = torch.zeros(T, H, dtype=torch.float32)
    out.index_add_(0, token_of, back.float() * w.flatten()[order].unsqueeze(1))
    return out.to(x.dtype)


_HOST_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq")


def cpu_now() -> dict:
    """CPU seconds so far: this process's calling thread ("compute"), its uccl engine threads,
    its other threads, and the host's (/proc/stat: every namespace, every process) by kind."""
    tick = os.sysconf("SC_CLK_TCK")
    me = threading.get_native_id()
    out = {"compute": 0.0, "engine": 0.0, "other": 0.0}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:  # the thread ended
            continue
        key = "compute" if int(tid) == me else ("engine" if name.startswith("uccl-engine") else "other")
        out[key] += (int(fields[11]) + int(fields[12])) / tick
    with open("/proc/stat") as f:
        host = f.readline().split()[1:1 + len(_HOST_FIELDS)]
    out.update({f"host {k}": int(v) / tick for k, v in zip(_HOST_FIELDS, host)})
    return out


def slowest(seconds: list, gloo) -> list:
    t = torch.tensor(seconds, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=gloo)
    return t.tolist()


def timed_phases(buf, x, experts, dtype, gloo, **dispatch_args) -> tuple:
    """One dispatch -> compute -> combine, each phase between barriers (every rank at once):
    their seconds on this rank."""
    from uccl.overlap.moe.buffer import weighted_experts

    dist.barrier(group=gloo)
    t0 = time.perf_counter()
    rx, ri, rw, _, handle, _ = buf.dispatch(x, **dispatch_args)
    t1 = time.perf_counter()
    dist.barrier(group=gloo)
    t2 = time.perf_counter()
    y = weighted_experts(experts, rx, ri, rw).to(dtype)
    t3 = time.perf_counter()
    dist.barrier(group=gloo)
    t4 = time.perf_counter()
    buf.combine(y, handle)
    return t1 - t0, t3 - t2, time.perf_counter() - t4


def calibrate(buf, x, idx, w, E: int, args, dtype, gloo) -> int:
    """An FFN width whose compute (on the slowest rank, all ranks computing at once) about equals
    dispatch + combine. Compute time is affine in the width (per-row overheads do not scale with
    it), so it is measured at two widths and the line through them solved for the communication
    time; extrapolating from one small width alone would undersize the FFN."""
    R = dist.get_world_size()

    def measure(width: int, reps: int = 3):
        probe = Experts(dist.get_rank(), E // R, args.hidden, width, dtype)
        comm, comp = [], []
        with torch.no_grad():
            for _ in range(reps):
                d, c, m = timed_phases(buf, x, probe, dtype, gloo, topk_idx=idx, topk_weights=w, num_experts=E)
                comm.append(d + m)
                comp.append(c)
        return slowest([statistics.median(comm), statistics.median(comp)], gloo)

    def clamp(width: float) -> int:
        return int(max(64, min(16384, width)) // 64 * 64)

    lo = 128
    comm, p_lo = measure(lo)
    hi = clamp(lo * comm / max(p_lo, 1e-6))
    if hi <= lo:
        return hi
    comm_hi, p_hi = measure(hi)
    comm = (comm + comm_hi) / 2
    slope = (p_hi - p_lo) / (hi - lo)
    return clamp(hi + (comm - p_hi) / slope) if slope > 0 else hi


def main() -> None:
    from uccl.overlap.moe import Buffer
    from uccl.overlap.moe.buffer import weighted_experts

    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--experts", type=int, default=32)
    ap.add_argument("--topk", type=int, default=4)
    ap.add_argument("--ffn", default="auto", help="expert FFN width, or 'auto': sized so that the experts' "
                    "compute takes about as long as dispatch + combine")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--chunk-bytes", type=int, default=256 << 10)
    ap.add_argument("--max-batch-chunks", type=int, default=0, help="Buffer(max_batch_chunks=)")
    ap.add_argument("--lag-wait", type=float, default=0.02, help="Buffer(lag_wait=)")
    ap.add_argument("--header-grace", type=float, default=0.05, help="Buffer(header_grace=)")
    ap.add_argument("--fused-path", default="auto", help="Buffer(fused_path=)")
    ap.add_argument("--compute-nice", type=int, default=0, help="Buffer(compute_nice=): the fused call's compute "
                    "thread yields the cores to the transport")
    ap.add_argument("--ll-tokens", type=int, default=32)
    ap.add_argument("--ll-iters", type=int, default=50)
    ap.add_argument("--variants", default="overlapped,sequential,megatron-uccl,megatron-gloo,phases,low-latency")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)  # ranks share the host's cores with each other and with uccl's engine
    dist.init_process_group(backend="uccl")
    gloo = dist.new_group(backend="gloo")
    rank, R = dist.get_rank(), dist.get_world_size()
    dtype = getattr(torch, args.dtype)
    E, E_loc = args.experts, args.experts // R
    x, idx, w = routing(rank, args.tokens, E, args.topk, args.hidden, dtype)
    buf = Buffer(dist.group.WORLD, chunk_bytes=args.chunk_bytes, compute_nice=args.compute_nice,
                 max_batch_chunks=args.max_batch_chunks, lag_wait=args.lag_wait,
                 header_grace=args.header_grace, fused_path=args.fused_path)
    per_rank, _, per_expert, in_rank, _ = buf.get_dispatch_layout(idx, E)
    ffn = calibrate(buf, x, idx, w, E, args, dtype, gloo) if args.ffn == "auto" else int(args.ffn)
    experts = Experts(rank, E_loc, args.hidden, ffn, dtype)

    def sequential():
        rx, ri, rw, _, handle, _ = buf.dispatch(x, num_tokens_per_rank=per_rank, is_token_in_rank=in_rank,
                                                num_tokens_per_expert=per_expert, topk_idx=idx, topk_weights=w)
        y = weighted_experts(experts, rx, ri, rw).to(dtype)
        return buf.combine(y, handle)[0]

    variants = {
        "uccl overlapped": lambda: buf.dispatch_compute_combine(x, idx, w, experts, E),
        "uccl sequential": sequential,
        "megatron on uccl": lambda: megatron_layer(x, idx, w, experts, E, dist.group.WORLD),
        "megatron on gloo": lambda: megatron_layer(x, idx, w, experts, E, gloo),
    }
    wanted = {"overlapped": "uccl overlapped", "sequential": "uccl sequential",
              "megatron-uccl": "megatron on uccl", "megatron-gloo": "megatron on gloo"}
    chosen = [wanted[v] for v in args.variants.split(",") if v in wanted]
    report = {"world": R, "setting": vars(args), "ffn": ffn, "variants": {}, "wrong": {}}
    with torch.no_grad():
        reference = sequential()
        # iterations interleave the variants (one call of each per round, each round starting
        # one variant later), so that load from outside the run, which drifts on a shared host,
        # and whatever a variant leaves behind for the next fall on all of them alike
        secs = {name: [] for name in chosen}
        cpu = {name: {} for name in chosen}  # CPU seconds spent during the timed calls, by kind
        outs = {}
        for it in range(args.warmup + args.iters):
            for name in chosen[it % len(chosen):] + chosen[:it % len(chosen)]:
                dist.barrier(group=gloo)
                c0 = cpu_now()
                t0 = time.perf_counter()
                outs[name] = variants[name]()
                if it >= args.warmup:
                    secs[name].append(time.perf_counter() - t0)
                    for key, v in cpu_now().items():
                        cpu[name][key] = cpu[name].get(key, 0.0) + (v - c0[key]) / args.iters
        everyone = [None] * R
        dist.all_gather_object(everyone, cpu, group=gloo)
        report["cpu_per_call_s"] = everyone  # per rank: variant -> kind -> CPU seconds per call
        report["cpus"] = len(os.sched_getaffinity(0))
        for name in chosen:
            ok = torch.allclose(outs[name].float(), reference.float(), rtol=2e-2, atol=2e-2)
            report["wrong"][name] = int(slowest([0.0 if ok else 1.0], gloo)[0])
            report["variants"][name] = slowest(secs[name], gloo)
            if rank == 0:
                print(f"{name}: {statistics.median(report['variants'][name]) * 1e3:.1f} ms", flush=True)
        if "uccl overlapped" in chosen:  # its last call: when chunks landed/computed/reduced, per rank
            report["fused_path"] = list(buf.last_path)
            mine = [(ev, p, c, round((t - buf.trace_start) * 1e3, 2)) for ev, p, c, t in buf.trace]
            mine += [("expert", e, n, round((t0 - buf.trace_start) * 1e3, 2), round((t1 - buf.trace_start) * 1e3, 2))
                     for e, n, t0, t1 in buf.trace_steps]
            traces = [None] * R
            dist.all_gather_object(traces, mine, group=gloo)
            report["overlapped_trace_ms"] = traces

        if "phases" in args.variants:
            phases = {"dispatch": [], "compute": [], "combine": []}
            for it in range(args.warmup + args.iters):
                took = timed_phases(buf, x, experts, dtype, gloo, num_tokens_per_rank=per_rank,
                                    is_token_in_rank=in_rank, num_tokens_per_expert=per_expert, topk_idx=idx,
                                    topk_weights=w)
                if it >= args.warmup:
                    for phase, t in zip(("dispatch", "compute", "combine"), took):
                        phases[phase].append(t)
            report["phases"] = {k: slowest(v, gloo) for k, v in phases.items()}
            # what must cross between ranks (deduplicated per destination rank), for the bisection ideal
            counts = torch.tensor([int(c) for c in per_rank.tolist()], dtype=torch.int64)
            matrix = [torch.zeros_like(counts) for _ in range(R)]
            dist.all_gather(matrix, counts, group=gloo)
            report["counts"] = [m.tolist() for m in matrix]
            report["row_bytes"] = args.hidden * x.element_size()

        if "low-latency" in args.variants:
            xl, il, wl = x[:args.ll_tokens], idx[:args.ll_tokens], w[:args.ll_tokens]
            secs = []
            for it in range(10 + args.ll_iters):
                dist.barrier(group=gloo)
                t0 = time.perf_counter()
                rx, count, handle, _, _ = buf.low_latency_dispatch(xl, il, args.ll_tokens, E)
                combined, _, _ = buf.low_latency_combine(rx, il, wl, handle)
                if it >= 10:
                    secs.append(time.perf_counter() - t0)
            report["low_latency"] = {"tokens": args.ll_tokens, "seconds": slowest(secs, gloo)}
            if rank == 0:
                median_us = statistics.median(report["low_latency"]["seconds"]) * 1e6
                print(f"low latency T={args.ll_tokens}: {median_us:.0f} us",
                      flush=True)
    if rank == 0:
        with open(args.out, "w") as f:
            json.dump(report, f)
    dist.barrier(group=gloo)
    buf.destroy()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
