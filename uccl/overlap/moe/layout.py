"""Routing layout: which tokens go to which rank and expert. Pure tensor math, no transport.

Experts are placed contiguously: expert e lives on rank e // (num_experts // world).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from uccl.errors import InvalidArgumentError


def check_topk(rank: int, op: str, topk_idx: torch.Tensor, num_experts: int, world: int, ids: bool = True) -> None:
    """ids=False: the caller checks the ids' range itself (low-latency mode does, in native code)."""
    if topk_idx.dim() != 2 or topk_idx.dtype not in (torch.int64, torch.int32):
        raise InvalidArgumentError(f"rank {rank}: {op}: topk_idx must be an int64 [tokens, k] tensor, "
                                   f"got {topk_idx.dtype}{tuple(topk_idx.shape)}")
    if num_experts <= 0 or num_experts % world:
        raise InvalidArgumentError(f"rank {rank}: {op}: num_experts {num_experts} must be a positive "
                                   f"multiple of the group size {world}")
    if ids and topk_idx.numel() and (int(topk_idx.min()) < -1 or int(topk_idx.max()) >= num_experts):
        raise InvalidArgumentError(f"rank {rank}: {op}: topk_idx holds ids outside [-1, {num_experts})")


def dispatch_layout(topk_idx: torch.Tensor, num_experts: int, world: int):
    """(tokens per rank [R] int32, tokens per expert [E] int32, is_token_in_rank [T, R] bool).
    A token counts once per rank however many of its experts live there."""
    idx = topk_idx.long()
    per_rank_experts = num_experts // world
    valid = idx >= 0
    per_expert = torch.bincount(idx[valid], minlength=num_experts).to(torch.int32)
    in_rank = torch.zeros(idx.shape[0], world, dtype=torch.bool)
    rows = torch.arange(idx.shape[0]).unsqueeze(1).expand_as(idx)
    in_rank[rows[valid], idx[valid] // per_rank_experts] = True
    return in_rank.sum(0, dtype=torch.int32), per_expert, in_rank


def local_topk(topk_idx: torch.Tensor, topk_weights, dest: int, per_rank_experts: int):
    """The ids of `dest`'s experts as its local ids (-1 elsewhere), and weights zeroed where -1."""
    lo = dest * per_rank_experts
    idx = topk_idx.long()
    mine = (idx >= lo) & (idx < lo + per_rank_experts)
    local = torch.where(mine, idx - lo, torch.full_like(idx, -1))
    weights = None if topk_weights is None else torch.where(mine, topk_weights.float(), torch.zeros(()))
    return local, weights


@dataclass
class Plan:
    """Who sends what to whom in one exchange. counts[s][d]: tokens rank s sends rank d
    (rows of the matrix come from every rank's header, so every rank agrees on it)."""

    rank: int
    world: int
    counts: list  # R x R ints
    send_idx: list  # per destination: this rank's token indices (int64), in token order

    def sent(self, dest: int) -> int:
        return self.counts[self.rank][dest]

    def received(self, src: int) -> int:
        return self.counts[src][self.rank]

    def recv_offset(self, src: int) -> int:
        """Where `src`'s tokens start among the tokens this rank receives (sources in rank order)."""
        return sum(self.counts[s][self.rank] for s in range(src))

    def recv_offset_at(self, dest: int, src: int) -> int:
        """Where `src`'s tokens start in `dest`'s receive buffer."""
        return sum(self.counts[s][dest] for s in range(src))

    def send_offset(self, src: int, dest: int) -> int:
        """Where `dest`'s rows start among the rows `src` sent (destinations in rank order)."""
        return sum(self.counts[src][d] for d in range(dest))

    @property
    def num_recv(self) -> int:
        return sum(self.received(s) for s in range(self.world))

    @property
    def num_sent(self) -> int:
        return sum(self.counts[self.rank])


def send_lists(is_token_in_rank: torch.Tensor) -> list:
    """Per destination rank, the indices of the tokens that go there, in token order."""
    return [torch.nonzero(is_token_in_rank[:, d], as_tuple=False).flatten() for d in range(is_token_in_rank.shape[1])]


def align_up(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment
