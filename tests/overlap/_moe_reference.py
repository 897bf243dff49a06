"""Single-process references for the MoE tests: routing scenarios every rank can rebuild
for every other rank (same seeds), and what dispatch/combine must produce, computed with
plain loops over tokens, independently of uccl.overlap.moe's own layout code."""

from __future__ import annotations

import torch

ROUTINGS = ["random", "skewed", "idle_experts", "silent_rank", "with_minus_one"]


def routing(kind: str, rank: int, tokens: int, num_experts: int, k: int, seed: int) -> torch.Tensor:
    """topk_idx [tokens, k] of `rank` (distinct experts per token, -1 allowed)."""
    g = torch.Generator().manual_seed(seed * 1000 + rank)
    scores = torch.rand(tokens, num_experts, generator=g)
    if kind == "skewed":  # half the tokens pick expert 0 among their top-k
        scores[: tokens // 2, 0] = 2.0
    if kind == "idle_experts":  # experts of the last rank's range and expert 1 receive nothing
        scores[:, 1] = -1.0
        scores[:, num_experts - num_experts // 4:] = -1.0
    idx = scores.topk(k, dim=1).indices
    if kind == "silent_rank" and rank == 1:  # rank 1 routes nothing anywhere
        idx[:] = -1
    if kind == "with_minus_one":
        drop = torch.rand(tokens, k, generator=g) < 0.3
        idx[drop] = -1
    return idx


def inputs(kind: str, rank: int, tokens: int, hidden: int, num_experts: int, k: int, seed: int, dtype):
    g = torch.Generator().manual_seed(seed * 1000 + 500 + rank)
    x = torch.randn(tokens, hidden, generator=g).to(dtype)
    idx = routing(kind, rank, tokens, num_experts, k, seed)
    w = torch.rand(tokens, k, generator=g)
    return x, idx, w


def owner(expert: int, num_experts: int, world: int) -> int:
    return expert // (num_experts // world)


def layout(idx: torch.Tensor, num_experts: int, world: int):
    """(tokens per rank, tokens per expert, is_token_in_rank) by a loop over tokens."""
    per_rank = [0] * world
    per_expert = [0] * num_experts
    in_rank = torch.zeros(idx.shape[0], world, dtype=torch.bool)
    for t, row in enumerate(idx.tolist()):
        ranks = set()
        for e in row:
            if e >= 0:
                per_expert[e] += 1
                ranks.add(owner(e, num_experts, world))
        for r in ranks:
            per_rank[r] += 1
            in_rank[t, r] = True
    return per_rank, per_expert, in_rank


def received(all_inputs, dest: int, num_experts: int, world: int):
    """What `dest` receives: per source (in rank order) its tokens, local ids, weights."""
    per_local = num_experts // world
    segments = []
    for src, (x, idx, w) in enumerate(all_inputs):
        rows, ids, ws = [], [], []
        for t, row in enumerate(idx.tolist()):
            local = [e - dest * per_local if e >= 0 and owner(e, num_experts, world) == dest else -1 for e in row]
            if any(v >= 0 for v in local):
                rows.append(x[t])
                ids.append(local)
                ws.append([float(w[t, j]) if local[j] >= 0 else 0.0 for j in range(len(row))])
        k = idx.shape[1]
        segments.append((torch.stack(rows) if rows else torch.empty(0, x.shape[1], dtype=x.dtype),
                         torch.tensor(ids, dtype=torch.int64).view(-1, k),
                         torch.tensor(ws, dtype=torch.float32).view(-1, k)))
    return segments


def moe_output(x, idx, w, expert_fn, num_experts: int, world: int) -> torch.Tensor:
    """out[t] = sum_j w[t, j] * expert(idx[t, j])(x[t]) with every expert in one process."""
    per_local = num_experts // world
    out = torch.zeros(x.shape, dtype=torch.float32)
    for t, row in enumerate(idx.tolist()):
        for j, e in enumerate(row):
            if e >= 0:
                y = expert_fn(owner(e, num_experts, world), e % per_local, x[t:t + 1])
                out[t] += float(w[t, j]) * y[0].float()
    return out.to(x.dtype)


def tolerance(dtype) -> float:
    return {torch.bfloat16: 3e-2, torch.float16: 5e-3}.get(dtype, 1e-5)
