"""MoELayer: a top-k router and feed-forward experts sharded over an expert-parallel group.

Rank r holds experts [r * E / R, (r + 1) * E / R). The router is replicated (initialize it
identically on every rank, e.g. with the same seed, and average its gradient like any
data-parallel parameter). forward runs the fused dispatch -> experts -> combine
(`fused=True`) or the three steps one after the other (`fused=False`), both differentiable.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from uccl.overlap.moe import autograd as A
from uccl.overlap.moe.buffer import Buffer, weighted_experts


class Expert(nn.Module):
    """A feed-forward expert: Linear -> GELU -> Linear."""

    def __init__(self, hidden: int, ffn_hidden: int) -> None:
        super().__init__()
        self.up = nn.Linear(hidden, ffn_hidden)
        self.down = nn.Linear(ffn_hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.gelu(self.up(x)))


def route(logits: torch.Tensor, top_k: int):
    """Softmax over experts, the top-k, weights renormalized to sum to 1 -> (topk_idx, topk_weights)."""
    probs = torch.softmax(logits.float(), dim=-1)
    weights, idx = probs.topk(top_k, dim=-1)
    return idx, weights / weights.sum(-1, keepdim=True)


class MoELayer(nn.Module):
    def __init__(self, hidden: int, ffn_hidden: int, num_experts: int, top_k: int, group=None,
                 buffer: Optional[Buffer] = None, fused: bool = True) -> None:
        super().__init__()
        self.buffer = buffer if buffer is not None else Buffer(group)
        world, rank = self.buffer.group_size, self.buffer.rank
        if num_experts % world:
            raise ValueError(f"rank {rank}: MoELayer: num_experts {num_experts} is not a multiple of the "
                             f"group size {world}")
        self.num_experts, self.top_k, self.fused = num_experts, top_k, fused
        self.local_experts = num_experts // world
        self.first_expert = rank * self.local_experts
        self.router = nn.Linear(hidden, num_experts, bias=False)
        self.experts = nn.ModuleList(Expert(hidden, ffn_hidden) for _ in range(self.local_experts))

    def _expert_fn(self, local: int, tokens: torch.Tensor) -> torch.Tensor:
        return self.experts[local](tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        topk_idx, topk_weights = route(self.router(x), self.top_k)
        topk_idx = topk_idx.detach()
        if self.fused:
            out = A.dispatch_compute_combine(self.buffer, x, topk_idx, topk_weights, self._expert_fn,
                                             self.num_experts, list(self.experts.parameters()))
        else:
            recv_x, recv_idx, recv_w, handle = A.dispatch(self.buffer, x, topk_idx, topk_weights, self.num_experts)
            y = weighted_experts(self._expert_fn, recv_x, recv_idx, recv_w).to(x.dtype)
            out = A.combine(self.buffer, y, handle)
        return out.reshape(shape)
