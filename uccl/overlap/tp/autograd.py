"""The differentiable all_gather_matmul and matmul_reduce_scatter: each one's backward is
the other (the gradient of a gathered input is reduce-scattered, the gradient of a
scattered output gathered), so the backward pass overlaps the same way."""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from uccl.overlap._group import resolve_group
from uccl.overlap.tp.ops import all_gather_matmul_forward, matmul_reduce_scatter_forward, reduce_scatter_along


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.shape[-1])


class _AllGatherMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a_shard, gather_dim, group, *bs):
        a, outs = all_gather_matmul_forward(a_shard, bs, gather_dim, group, return_a=True)
        ctx.save_for_backward(a, *bs)
        ctx.gather_dim, ctx.group = gather_dim % a_shard.dim(), group
        return (a, *outs)

    @staticmethod
    def backward(ctx, grad_a, *grad_outs):
        a, *bs = ctx.saved_tensors
        used = [(g, b) for g, b in zip(grad_outs, bs) if g is not None]
        grad_shard = None
        if ctx.needs_input_grad[0] and used:
            # d(a_shard) = reduce_scatter(sum_i g_i @ B_i^T) = reduce_scatter([g_1 .. g_n] @ [B_1 .. B_n]^T)
            g = torch.cat([g for g, _ in used], dim=-1) if len(used) > 1 else used[0][0]
            b = torch.cat([b for _, b in used], dim=1) if len(used) > 1 else used[0][1]
            grad_shard = matmul_reduce_scatter_forward(g, b.t(), "sum", ctx.gather_dim, ctx.group)
        if ctx.needs_input_grad[0] and grad_a is not None:
            pg = resolve_group(ctx.group)
            extra = reduce_scatter_along(grad_a, "sum", ctx.gather_dim, pg, dist.get_world_size(pg))
            grad_shard = extra if grad_shard is None else grad_shard + extra
        a_t = _flat(a).t() if any(ctx.needs_input_grad[3:]) else None
        grad_bs = [a_t @ _flat(g) if g is not None and need else None
                   for g, need in zip(grad_outs, ctx.needs_input_grad[3:])]
        return (grad_shard, None, None, *grad_bs)


class _MatmulReduceScatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, reduce_op, scatter_dim, group):
        ctx.save_for_backward(a, b)
        ctx.reduce_op, ctx.scatter_dim, ctx.group = reduce_op, scatter_dim % a.dim(), group
        return matmul_reduce_scatter_forward(a, b, reduce_op, scatter_dim, group)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        if ctx.reduce_op == "avg":
            grad = grad / dist.get_world_size(resolve_group(ctx.group))
        # d(a) = all_gather(grad) @ b^T, and the gathered grad gives d(b) = a^T @ it
        gathered, (grad_a,) = all_gather_matmul_forward(grad.contiguous(), [b.t()], ctx.scatter_dim, ctx.group,
                                                        return_a=True)
        grad_b = _flat(a).t() @ _flat(gathered) if ctx.needs_input_grad[1] else None
        return (grad_a if ctx.needs_input_grad[0] else None), grad_b, None, None, None


def _wants_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def all_gather_matmul(a_shard: torch.Tensor, bs: Sequence[torch.Tensor], gather_dim: int, group: Any = None, *,
                      return_a: bool = True) -> Tuple[Optional[torch.Tensor], List[torch.Tensor]]:
    """(all_gather(a_shard, gather_dim) or None, [A @ B for B in bs]): the local shard is
    multiplied at once, each peer's shard as it lands (a gather along the last dim splits
    along K: mm, then addmm_ per piece). Differentiable: its backward is
    matmul_reduce_scatter."""
    if not _wants_grad(a_shard, *bs):
        return all_gather_matmul_forward(a_shard, bs, gather_dim, group, return_a=return_a)
    a, *outs = _AllGatherMatmul.apply(a_shard, gather_dim, group, *bs)
    return (a if return_a else None), list(outs)


def matmul_reduce_scatter(a: torch.Tensor, b: torch.Tensor, reduce_op: str, scatter_dim: int,
                          group: Any = None) -> torch.Tensor:
    """reduce_scatter(a @ b, scatter_dim) with reduce_op "sum" or "avg": the block for each
    peer is computed and sent while the next is computed; blocks are reduced as they arrive
    (half types in float32, rounded once). Differentiable: its backward is all_gather_matmul."""
    if not _wants_grad(a, b):
        return matmul_reduce_scatter_forward(a, b, reduce_op, scatter_dim, group)
    return _MatmulReduceScatter.apply(a, b, reduce_op, scatter_dim, group)
