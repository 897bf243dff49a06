"""Low-latency MoE against its floor, on one host, in one run (4 ranks over shared memory):

    low latency      Buffer.low_latency_dispatch + low_latency_combine of T tokens (k experts each)
    all_to_all x2    two uccl all_to_alls of the same bytes (T * k rows of H float32 each way)
    barrier x2       two uccl barriers: the least synchronisation a step needs (every rank
                     learns twice that its peers' rows have landed), with no bytes
    copies only      the memory passes any implementation makes over a rank's T * k rows,
                     within the rank and with no synchronisation: rows out (copy), rows back
                     (copy), the weighted sum over k (read once)

each step between barriers, alternating, median over iterations of the slowest rank; also the
CPU time each rank spent in the step (process time: with more ranks than cores, wall time is
about ranks / cores times the CPU a rank spends, so CPU is what a change has to cut).

    python perf/moe_ll_floor.py                  # T=32 H=2048 E=32 k=4, 200 iterations
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from uccl.testing.ranks import run_ranks

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(ctx, T: int, H: int, E: int, k: int, iters: int) -> dict:
    from uccl.collectives import Communicator
    from uccl.overlap.moe import Buffer

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(100 + ctx.rank)
    x = torch.randn(T, H, generator=g)
    idx = torch.rand(T, E, generator=g).topk(k, dim=1).indices
    w = torch.rand(T, k, generator=g)
    buf, comm = Buffer(ctx.bootstrap, low_latency_mode=True), Communicator(ctx.bootstrap)
    send = torch.randn(T * k * H)
    recv = torch.empty_like(send)
    out_rows, back_rows, combined = torch.empty(T * k, H), torch.empty(T * k, H), torch.empty(T, 1, H)
    w3 = w.view(T, 1, k)
    names = ["low latency", "all_to_all x2", "barrier x2", "copies only"]
    wall: dict = {n: [] for n in names}
    cpu: dict = {n: [] for n in names}
    for it in range(10 + iters):
        for name in wall:
            comm.barrier()
            t0, c0 = time.perf_counter_ns(), time.process_time_ns()
            if name == "low latency":
                rx, _, handle, _, _ = buf.low_latency_dispatch(x, idx, T, E)
                buf.low_latency_combine(rx, idx, w, handle)
            elif name == "all_to_all x2":
                comm.all_to_all(send, recv)
                comm.all_to_all(send, recv)
            elif name == "barrier x2":
                comm.barrier()
                comm.barrier()
            else:
                out_rows.copy_(send.view(T * k, H))
                back_rows.copy_(out_rows)
                torch.bmm(w3, back_rows.view(T, k, H), out=combined)
            if it >= 10:
                wall[name].append(time.perf_counter_ns() - t0)
                cpu[name].append(time.process_time_ns() - c0)
    buf.destroy()
    return {"wall_us": {n: statistics.median(v) / 1e3 for n, v in wall.items()},
            "cpu_us": {n: statistics.median(v) / 1e3 for n, v in cpu.items()}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--experts", type=int, default=32)
    ap.add_argument("--topk", type=int, default=4)
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--json", default=os.path.join(HERE, "results", "moe_ll_floor.json"))
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    per_rank = run_ranks(worker, args.ranks, args=(args.tokens, args.hidden, args.experts, args.topk, args.iters),
                         env={"UCCL_TRANSPORT": "shm", "OMP_NUM_THREADS": "1"}, timeout=600)
    summary = {kind: {n: max(r[kind][n] for r in per_rank) for n in per_rank[0][kind]} for kind in ("wall_us", "cpu_us")}
    result = {"benchmark": "moe_ll_floor", "setting": vars(args), "load_before": load_before,
              "load_after": os.getloadavg(), "per_rank": per_rank, "slowest_rank": summary}
    for name in summary["wall_us"]:
        print(f"{name:<14} {summary['wall_us'][name]:8.0f} us wall   {summary['cpu_us'][name]:8.0f} us CPU (slowest rank)")
    ll, floor = summary["wall_us"]["low latency"], summary["wall_us"]["all_to_all x2"]
    print(f"low latency / floor: {ll / floor:.2f}x wall, "
          f"{summary['cpu_us']['low latency'] / summary['cpu_us']['all_to_all x2']:.2f}x CPU; "
          f"load {load_before[0]:.1f} -> {result['load_after'][0]:.1f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    plot(summary, args.json.replace(".json", ".png"))


def plot(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.5))
    names = list(summary["wall_us"])
    ax.barh([f"{n} (wall)" for n in names], [summary["wall_us"][n] for n in names], color="C0")
    ax.barh([f"{n} (CPU)" for n in names], [summary["cpu_us"][n] for n in names], color="C7")
    ax.invert_yaxis()
    ax.set_xlabel("us per step (slowest rank, median)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
