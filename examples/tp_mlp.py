"""A tensor-parallel MLP trains over uccl and follows the single-process loss curve.

The model is a transformer MLP block with Megatron's sequence parallelism: each rank
holds a slice of the sequence and a slice of the FFN weights; ColumnParallelLinear
gathers the sequence fused with its GEMM (all_gather_matmul), RowParallelLinear
reduce-scatters fused with its GEMM (matmul_reduce_scatter), forward and backward.
Every rank also trains the same MLP as one plain torch model on the whole sequence and
prints both loss curves; the run fails if they part.

    uccl-run --nproc-per-node 2 examples/tp_mlp.py
    uccl-run --nproc-per-node 2 --transport net examples/tp_mlp.py --splits 4   # fused path forced
    python examples/tp_mlp.py                 # starts uccl-run with 2 ranks itself

On one host the plan runs the unfused path (nothing to overlap with there); --splits N
(UCCL_TP_SPLITS) forces the fused one in N pieces; across hosts the plan picks it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import torch
import torch.distributed as dist

SEQ, BATCH, HIDDEN, FFN = 64, 2, 32, 128


def data(steps: int):
    """A fixed regression problem: targets from a random two-layer teacher."""
    g = torch.Generator().manual_seed(99)
    x = torch.randn(steps, SEQ, BATCH, HIDDEN, generator=g)
    teacher = torch.randn(HIDDEN, HIDDEN, generator=g) / HIDDEN ** 0.5
    return x, torch.tanh(x @ teacher)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--splits", type=int, default=None, help="UCCL_TP_SPLITS for the fused ops")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="largest relative loss difference allowed")
    args = ap.parse_args()
    if "RANK" not in os.environ:  # not under a launcher: start 2 ranks with uccl-run
        cmd = [sys.executable, "-m", "uccl.launch.run", "--nproc-per-node", "2", __file__, *sys.argv[1:]]
        sys.exit(subprocess.call(cmd))
    if args.splits is not None:
        os.environ["UCCL_TP_SPLITS"] = str(args.splits)
    torch.set_num_threads(1)
    dist.init_process_group("uccl")
    from uccl.overlap import tp

    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # every rank draws the same master weights
    col = tp.ColumnParallelLinear(HIDDEN, FFN, gather_output=False, sequence_parallel=True,
                                  keep_master_weight_for_test=True)
    row = tp.RowParallelLinear(FFN, HIDDEN, input_is_parallel=True, sequence_parallel=True,
                               keep_master_weight_for_test=True)
    ref = torch.nn.Sequential(torch.nn.Linear(HIDDEN, FFN), torch.nn.GELU(), torch.nn.Linear(FFN, HIDDEN))
    with torch.no_grad():
        ref[0].weight.copy_(col.master_weight), ref[0].bias.zero_()
        ref[2].weight.copy_(row.master_weight), ref[2].bias.zero_()
    params = list(col.parameters()) + list(row.parameters())
    opt, ref_opt = torch.optim.SGD(params, lr=args.lr), torch.optim.SGD(ref.parameters(), lr=args.lr)
    xs, ys = data(args.steps)
    worst, plans = 0.0, set()
    for step in range(args.steps):
        x, y = xs[step].chunk(world)[rank], ys[step].chunk(world)[rank]  # this rank's slice of the sequence
        h, _ = col(x)
        plans.add(tp.last_plan().path)
        out, _ = row(torch.nn.functional.gelu(h))
        loss = ((out - y) ** 2).sum() / ys[step].numel()  # this rank's share of the mean
        opt.zero_grad()
        loss.backward()
        tp.sync_sequence_parallel_grads(row)
        opt.step()
        total = loss.detach().clone()
        dist.all_reduce(total)

        ref_loss = torch.nn.functional.mse_loss(ref(xs[step]), ys[step])
        ref_opt.zero_grad()
        ref_loss.backward()
        ref_opt.step()
        diff = abs(total.item() - ref_loss.item()) / ref_loss.item()
        worst = max(worst, diff)
        if rank == 0:
            print(f"step {step:3d}  tensor-parallel loss {total.item():.6f}  single-process loss "
                  f"{ref_loss.item():.6f}  rel diff {diff:.1e}", flush=True)
    if rank == 0:
        print(f"{world} ranks, paths taken: {sorted(plans)}; largest relative difference {worst:.1e}")
    dist.destroy_process_group()
    if worst > args.tolerance:
        sys.exit(f"rank {rank}: the tensor-parallel loss curve left the single-process one ({worst:.1e})")


if __name__ == "__main__":
    main()
