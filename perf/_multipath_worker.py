"""One rank of perf/multipath.py and perf/topo.py: a plain torch.distributed program
(started by uccl-fabric's launcher on the emulated hosts) that times all_to_all_single,
all_reduce, reduce_scatter_tensor and all_gather_into_tensor (`bytes`: the full vector, the
reduce-scatter's input and the all-gather's output), checks every result against a
reference, and has rank 0 write JSON.

Completion time of an iteration = the slowest rank's time from leaving a barrier to
having its result. Wall-clock windows (time.time()) let the driver line the iterations
up with the uplink counters it samples."""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.distributed as dist


def inputs(op: str, rank: int, world: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, expected output); exact in float32 (integers below 2**24)."""
    idx = torch.arange(n, dtype=torch.float32)
    if op == "all_to_all":
        inp = rank * float(1 << 20) + idx  # element k of rank r: r * 2^20 + k
        per = n // world
        expect = torch.cat([src * float(1 << 20) + idx[rank * per:(rank + 1) * per] for src in range(world)])
        return inp, expect
    per = n // world
    if op == "all_gather":  # each rank's block: r * 2^20 + k
        return rank * float(1 << 20) + idx[:per], torch.cat([src * float(1 << 20) + idx[:per] for src in range(world)])
    base = torch.remainder(idx, 1024)
    if op == "reduce_scatter":
        return base * (rank + 1), base[rank * per:(rank + 1) * per] * (world * (world + 1) / 2)
    return base * (rank + 1), base * (world * (world + 1) / 2)


def net_stats(backend: str) -> dict:
    """Rank's uccl net-channel counters per peer (packets, retransmits, timeouts, per path)."""
    if backend != "uccl":
        return {}
    try:
        view = dist.distributed_c10d._get_default_group()._get_backend(torch.device("cpu"))
        stats = getattr(view, "_pg", view).communicator.endpoint.stats()
    except Exception as exc:  # a diagnostic only
        return {"error": repr(exc)}
    out = {}
    for peer, st in enumerate(stats.get("peers", [])):
        net = st.get("net") if isinstance(st, dict) else None
        if net:
            out[peer] = {k: v for k, v in net.items() if k != "paths"}
            out[peer]["paths_used"] = sum(1 for p in net.get("paths", []) if p.get("packets_sent"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", required=True)
    ap.add_argument("--ops", default="all_to_all,all_reduce")
    ap.add_argument("--bytes", type=int, default=4 << 20, help="per rank")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    dist.init_process_group(backend=args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    n = args.bytes // 4 // world * world
    report = {"backend": args.backend, "world": world, "bytes": n * 4, "host_addr": os.environ.get("UCCL_ADDR"),
              "ops": {}}
    for op in args.ops.split(","):
        inp, expect = inputs(op, rank, world, n)
        out = torch.empty_like(expect)
        times, windows, cpu, wrong = [], [], [], 0
        for it in range(args.warmup + args.iters):
            buf = inp.clone() if op == "all_reduce" else None
            dist.barrier()
            w0, t0, c0 = time.time(), time.perf_counter(), time.process_time()
            if op == "all_to_all":
                dist.all_to_all_single(out, inp)
            elif op == "reduce_scatter":
                dist.reduce_scatter_tensor(out, inp)
            elif op == "all_gather":
                dist.all_gather_into_tensor(out, inp)
            else:
                dist.all_reduce(buf)
            dt = time.perf_counter() - t0
            dc = time.process_time() - c0  # this rank's threads (engine included)
            w1 = time.time()
            result = buf if op == "all_reduce" else out
            if not torch.equal(result, expect):
                wrong += 1
            if it >= args.warmup:
                times.append(dt)
                windows.append((w0, w1))
                cpu.append(dc)
        t = torch.tensor(times, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)  # an iteration ends when its slowest rank is done
        bad = torch.tensor([wrong], dtype=torch.int64)
        dist.all_reduce(bad)
        cpu_all = torch.tensor(cpu, dtype=torch.float64)
        dist.all_reduce(cpu_all)  # CPU seconds of every rank together, per iteration
        report["ops"][op] = {"seconds": t.tolist(), "windows": windows, "wrong": int(bad.item()),
                             "rank_cpu_seconds": cpu_all.tolist()}
    report["net"] = net_stats(args.backend)
    dist.barrier()
    if rank == 0:
        with open(args.out, "w") as f:
            json.dump(report, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
