"""A small MoE transformer block trained with experts spread over the ranks.

Each rank holds num_experts / world experts (uccl.overlap.moe.MoELayer: top-k router,
dispatch -> experts -> combine fused on uccl's transport); the dense part (attention,
norms, head) and the router are data-parallel (torch DDP over backend "uccl"). The task is
to imitate a fixed random teacher block; the loss must fall.

    uccl-run --nproc-per-node 4 examples/moe_train.py                 # one host, shared memory
    uccl-run --fabric hosts=4,leaves=2,spines=2 examples/moe_train.py  # emulated fabric (root)
    uccl-run --nproc-per-node 2 examples/moe_train.py --steps 300 --sequential

Exits non-zero if the loss of the last 20 steps is not below half the first 20's.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.distributed as dist
from torch import nn

from uccl.overlap.moe import MoELayer


class Dense(nn.Module):
    """The data-parallel part: attention and norms around the MoE, and the head."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.head = nn.Linear(hidden, hidden)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        return x + self.attn(h, h, h, need_weights=False)[0]


class Block(nn.Module):
    def __init__(self, dense: nn.Module, moe: MoELayer) -> None:
        super().__init__()
        self.dense, self.moe = dense, moe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        core = self.dense.module if hasattr(self.dense, "module") else self.dense
        h = core.attend(x)
        h = h + self.moe(core.norm2(h))
        return core.head(h)


def teacher_batch(step: int, rank: int, batch: int, seq: int, hidden: int, teacher: nn.Module):
    g = torch.Generator().manual_seed(step * 1000 + rank)
    x = torch.randn(batch, seq, hidden, generator=g)
    with torch.no_grad():
        return x, teacher(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--ffn", type=int, default=128)
    ap.add_argument("--experts-per-rank", type=int, default=2)
    ap.add_argument("--topk", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--sequential", action="store_true", help="dispatch, experts, combine one after the other")
    args = ap.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group(backend="uccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    num_experts = args.experts_per_rank * world

    torch.manual_seed(0)  # the teacher and the replicated parameters are the same on every rank
    teacher = nn.Sequential(nn.Linear(args.hidden, args.hidden), nn.Tanh(), nn.Linear(args.hidden, args.hidden))
    dense = Dense(args.hidden, 4)
    moe = MoELayer(args.hidden, args.ffn, num_experts, args.topk, group=dist.group.WORLD, fused=not args.sequential)
    torch.manual_seed(1 + rank)  # each rank's experts are its own
    for expert in moe.experts:
        for p in expert.parameters():
            nn.init.normal_(p, std=0.05)
    model = Block(nn.parallel.DistributedDataParallel(dense), moe)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)

    losses, start = [], time.perf_counter()
    for step in range(args.steps):
        x, y = teacher_batch(step, rank, args.batch, args.seq, args.hidden, teacher)
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        dist.all_reduce(moe.router.weight.grad)  # the router is data-parallel too
        moe.router.weight.grad /= world
        opt.step()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        losses.append(float(mean) / world)
        if rank == 0 and (step % 50 == 0 or step == args.steps - 1):
            print(f"step {step:4d}  loss {losses[-1]:.4f}", flush=True)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    if rank == 0:
        print(f"{world} ranks, {num_experts} experts ({'sequential' if args.sequential else 'fused'}): "
              f"loss {first:.4f} -> {last:.4f} in {args.steps} steps, "
              f"{(time.perf_counter() - start) / args.steps * 1e3:.1f} ms/step", flush=True)
    moe.buffer.destroy()
    dist.destroy_process_group()
    if last >= first / 2:
        raise SystemExit(f"rank {rank}: the loss did not fall enough ({first:.4f} -> {last:.4f})")


if __name__ == "__main__":
    main()
