"""The sequence-parallel MLP block fused end to end: parallel_mlp.

Unfused, the block is all_gather(x) @ w1 -> activation -> @ w2 -> reduce_scatter, and the
activation over all gathered tokens runs with no communication in flight. Fused, each
rank pipelines per token piece: it sends its own token rows to every peer; as a peer's
rows land it runs GEMM1 -> activation -> GEMM2 on just those rows and sends the partial
result straight back (the owner's share of the reduce-scatter), in between it computes
its own tokens; the owner adds the partials that arrive (float32 for half types, rounded
once). The wire carries token pieces, then result pieces, while the CPU keeps computing.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import torch
import torch.distributed as dist

from uccl.overlap._group import all_gather_single
from uccl.overlap.tp.ops import _HALF, _context, _err, _plan, _ring, reduce_scatter_along
from uccl.overlap.tp.pieces import Exchange
from uccl.overlap.tp.plan import bounds

OP = "parallel_mlp"


def _check(x_shard, w1, w2, b1, rank) -> None:
    if x_shard.dim() < 2:
        raise _err(rank, OP, f"x_shard must have at least 2 dims (tokens first), got shape {tuple(x_shard.shape)}")
    for name, w in (("w1", w1), ("w2", w2)):
        if w.dim() != 2:
            raise _err(rank, OP, f"{name} must be a matrix, got shape {tuple(w.shape)}")
        if w.dtype != x_shard.dtype:
            raise _err(rank, OP, f"{name} is {w.dtype}, x_shard is {x_shard.dtype}")
    if w1.shape[0] != x_shard.shape[-1]:
        raise _err(rank, OP, f"w1 has {w1.shape[0]} rows, x_shard has {x_shard.shape[-1]} features")
    if w2.shape[0] != w1.shape[1]:
        raise _err(rank, OP, f"w2 has {w2.shape[0]} rows, w1 has {w1.shape[1]} columns")
    if b1 is not None and (b1.shape != (w1.shape[1],) or b1.dtype != x_shard.dtype):
        raise _err(rank, OP, f"b1 is {b1.dtype}{tuple(b1.shape)}, expected {x_shard.dtype}({w1.shape[1]},)")


def _hidden(rows, w1, b1, activation, pre_out=None):
    """activation(rows @ w1 + b1); the pre-activation lands in pre_out when given (saved for backward)."""
    pre = torch.mm(rows, w1, out=pre_out) if pre_out is not None else torch.mm(rows, w1)
    if b1 is not None:
        pre.add_(b1)
    return activation(pre)


def _unfused(x, w1, w2, b1, activation, pg, world, keep):
    """The composition: all_gather, GEMM1 (+b1), activation, GEMM2, reduce_scatter along dim 0."""
    m, k = x.shape[0], x.shape[1]
    gathered = torch.empty((world * m, k), dtype=x.dtype, device=x.device)
    all_gather_single(gathered, x, pg)
    pre = torch.mm(gathered, w1)
    if b1 is not None:
        pre = pre + b1
    out = reduce_scatter_along(torch.mm(activation(pre), w2), "sum", 0, pg, world)
    return out, ((gathered, pre) if keep else None)


def _fused(x, w1, w2, b1, activation, upg, rank, world, pieces, keep):
    """The pipeline on the flattened shard x ([m, k]): token pieces out, result pieces back.
    Between pieces it computes whatever is ready: a landed peer piece first (its result
    must still cross the wire), else the next own piece; the own tokens fill the gaps."""
    m, k, n = x.shape[0], x.shape[1], w2.shape[1]
    ex = Exchange(upg, OP)
    cuts = bounds(m, pieces)
    slots = torch.empty((world, m, k), dtype=x.dtype)          # every rank's tokens (the gathered x)
    pre = torch.empty((world, m, w1.shape[1]), dtype=x.dtype) if keep else None
    sent = torch.empty((world, m, n), dtype=x.dtype)           # partial results for the peers
    got = torch.empty((world, m, n), dtype=x.dtype)            # the peers' partials for our tokens
    peers = [_ring(rank, world, -j) for j in range(1, world)]  # the nearest first
    rows_in = [(src, i, ex.recv(src, slots[src, lo:hi], i)) for src in peers for i, (lo, hi) in enumerate(cuts)]
    parts_in = [((lo, hi), ex.recv(src, got[src, lo:hi], pieces + i))
                for src in peers for i, (lo, hi) in enumerate(cuts)]
    for i, (lo, hi) in enumerate(cuts):
        for j in range(1, world):
            ex.send(_ring(rank, world, j), x[lo:hi], i)
    slots[rank].copy_(x)
    acc = torch.empty((m, n), dtype=torch.float32 if x.dtype in _HALF else x.dtype)
    own = list(cuts)
    while rows_in or own:
        if rows_in and (not own or ex.ready(rows_in[0][2])):
            src, i, posted = rows_in.pop(0)
            lo, hi = cuts[i]
            rows = ex.wait(posted)
            h = _hidden(rows, w1, b1, activation, pre[src, lo:hi] if keep else None)
            torch.mm(h, w2, out=sent[src, lo:hi])
            ex.send(src, sent[src, lo:hi], pieces + i)
        else:
            lo, hi = own.pop(0)
            h = _hidden(x[lo:hi], w1, b1, activation, pre[rank, lo:hi] if keep else None)
            if acc.dtype == x.dtype:
                torch.mm(h, w2, out=acc[lo:hi])
            else:
                acc[lo:hi].copy_(torch.mm(h, w2))
    for (lo, hi), posted in parts_in:
        acc[lo:hi].add_(ex.wait(posted))
    ex.finish()
    out = acc if acc.dtype == x.dtype else acc.to(x.dtype)
    return out, ((slots.view(world * m, k), pre.view(world * m, -1)) if keep else None)


def parallel_mlp_forward(x_shard: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor,
                         activation: Callable[[torch.Tensor], torch.Tensor], group: Any = None,
                         b1: Optional[torch.Tensor] = None, *, keep: bool = False
                         ) -> Tuple[torch.Tensor, Optional[tuple]]:
    """(output shard, saved) where saved = (gathered x [world*m, k], pre-activation
    [world*m, f]) when `keep` (for backward), rows in the gathered order. No autograd."""
    pg, upg, rank, world, transport = _context(group, x_shard)
    _check(x_shard, w1, w2, b1, rank)
    lead = x_shard.shape[:-1]
    x = x_shard.reshape(-1, x_shard.shape[-1]).contiguous()
    m = x.shape[0]
    plan = _plan(OP, upg, x_shard, world, transport, m * max(x.shape[1], w2.shape[1]) * x.element_size(), m)
    if plan.path == "unfused":
        out, saved = _unfused(x, w1, w2, b1, activation, pg, world, keep)
    else:
        out, saved = _fused(x, w1, w2, b1, activation, upg, rank, world, plan.pieces, keep)
    return out.view(*lead, w2.shape[1]), saved


class _ParallelMLP(torch.autograd.Function):
    """Backward from the saved gathered x and pre-activation, on the fused ops: the output
    gradient gathered with GEMM2's input gradient (all_gather_matmul), the activation's
    gradient locally, the input gradient reduce-scattered with its GEMM
    (matmul_reduce_scatter); the weight gradients from the gathered tensors."""

    @staticmethod
    def forward(ctx, x_shard, w1, w2, b1, activation, group):
        out, (gathered, pre) = parallel_mlp_forward(x_shard, w1, w2, activation, group, b1, keep=True)
        ctx.save_for_backward(gathered, pre, w1, w2)
        ctx.activation, ctx.group, ctx.has_b1, ctx.shard_shape = activation, group, b1 is not None, x_shard.shape
        return out

    @staticmethod
    def backward(ctx, grad):
        from uccl.overlap.tp.ops import all_gather_matmul_forward, matmul_reduce_scatter_forward

        gathered, pre, w1, w2 = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1]).contiguous()
        g_all, (d_h,) = all_gather_matmul_forward(g, [w2.t()], 0, ctx.group, return_a=True)
        with torch.enable_grad():
            p = pre.detach().requires_grad_()
            h = ctx.activation(p)
        (d_pre,) = torch.autograd.grad(h, p, d_h)
        grad_w2 = h.detach().t() @ g_all if ctx.needs_input_grad[2] else None
        grad_w1 = gathered.t() @ d_pre if ctx.needs_input_grad[1] else None
        grad_b1 = d_pre.sum(0) if ctx.has_b1 and ctx.needs_input_grad[3] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = matmul_reduce_scatter_forward(d_pre, w1.t(), "sum", 0, ctx.group).view(ctx.shard_shape)
        return grad_x, grad_w1, grad_w2, grad_b1, None, None


def parallel_mlp(x_shard: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor,
                 activation: Callable[[torch.Tensor], torch.Tensor] = torch.nn.functional.gelu,
                 group: Any = None, *, b1: Optional[torch.Tensor] = None) -> torch.Tensor:
    """reduce_scatter(activation(all_gather(x_shard, 0) @ w1 + b1) @ w2, 0): the
    sequence-parallel MLP block (w1 this rank's column shard [k, f/world], w2 its row shard
    [f/world, n]), with the result and strides of the unfused composition
    all_gather_matmul -> activation -> matmul_reduce_scatter. `activation` must act on each
    token row alone (it runs on pieces of rows). Fused on the net channel across hosts,
    token piece by token piece (module docstring); `last_plan()` says which path ran.
    Differentiable in x_shard, w1, w2 and b1."""
    tensors = (x_shard, w1, w2) + ((b1,) if b1 is not None else ())
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _ParallelMLP.apply(x_shard, w1, w2, b1, activation, group)
    return parallel_mlp_forward(x_shard, w1, w2, activation, group, b1)[0]
