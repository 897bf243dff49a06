"""Autograd for MoE communication: dispatch's backward is a combine of the gradients, and
combine's backward a dispatch (with the cached handle); the fused call's backward
recomputes the local experts on the rows it received (kept from the forward), so expert
parameters get their gradients where the experts live.

Every rank must run the same backward (same graph), as every rank ran the same forward:
the backward's dispatches and combines are collective over the Buffer's group.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from uccl.overlap.moe.buffer import Buffer, Handle, weighted_experts


class _Dispatch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, topk_weights, buffer: Buffer, topk_idx, num_experts: int):
        recv_x, recv_idx, recv_w, _, handle, _ = buffer.dispatch(
            x.detach(), topk_idx=topk_idx, topk_weights=topk_weights.detach(), num_experts=num_experts)
        ctx.buffer, ctx.handle = buffer, handle
        ctx.save_for_backward(recv_idx)
        ctx.mark_non_differentiable(recv_idx)
        return recv_x, recv_idx, recv_w, handle

    @staticmethod
    def backward(ctx, grad_x, _grad_idx, grad_w, _grad_handle):
        (recv_idx,) = ctx.saved_tensors
        grad_w = None if grad_w is None else grad_w * (recv_idx >= 0)
        if grad_x is None:
            grad_x = torch.zeros(recv_idx.shape[0], 0)
        combined, combined_w, _ = ctx.buffer.combine(grad_x.contiguous(), ctx.handle, topk_weights=grad_w)
        return combined, combined_w, None, None, None


class _Combine(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, buffer: Buffer, handle: Handle):
        ctx.buffer, ctx.handle = buffer, handle
        return buffer.combine(y.detach(), handle)[0]

    @staticmethod
    def backward(ctx, grad):
        recv_grad = ctx.buffer.dispatch(grad.contiguous(), handle=ctx.handle)[0]
        return recv_grad, None, None


def dispatch(buffer: Buffer, x, topk_idx, topk_weights, num_experts: int):
    """Differentiable in x and topk_weights: (recv_x, recv_topk_idx, recv_topk_weights, handle)."""
    return _Dispatch.apply(x, topk_weights, buffer, topk_idx, num_experts)


def combine(buffer: Buffer, y, handle: Handle):
    """Differentiable in y: the sum over the ranks that held each token."""
    return _Combine.apply(y, buffer, handle)


class _Fused(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, topk_weights, buffer: Buffer, topk_idx, expert_fn, num_experts: int, *params):
        with torch.no_grad():
            out, saved = buffer.dispatch_compute_combine(x.detach(), topk_idx, topk_weights.detach(), expert_fn,
                                                         num_experts, keep_received=True)
        ctx.buffer, ctx.expert_fn, ctx.saved, ctx.num_experts = buffer, expert_fn, saved, num_experts
        ctx.params, ctx.num_tokens = params, x.shape[0]
        return out

    @staticmethod
    def backward(ctx, grad_out):
        buffer, saved = ctx.buffer, ctx.saved
        plan, rec = saved.plan, saved.rec
        in_rank = torch.zeros(ctx.num_tokens, plan.world, dtype=torch.bool)
        for d, idx in enumerate(plan.send_idx):
            in_rank[idx, d] = True
        handle = Handle(plan.counts, plan.send_idx, in_rank, ctx.num_tokens, ctx.num_experts)
        grad_recv = buffer.dispatch(grad_out.contiguous(), handle=handle)[0]
        rows = saved.received()
        x_r = rec.part(rows, 0).clone().requires_grad_(True)
        w_r = rec.weights(rows).clone().requires_grad_(True)
        ids = rec.ids(rows).clone()
        params = [p for p in ctx.params if p.requires_grad]
        with torch.enable_grad():
            y = weighted_experts(ctx.expert_fn, x_r, ids, w_r)
            grads = torch.autograd.grad(y, [x_r, w_r] + params, grad_recv.float(), allow_unused=True)
        grad_x_r = torch.zeros_like(x_r) if grads[0] is None else grads[0]
        grad_w_r = torch.zeros_like(w_r) if grads[1] is None else grads[1] * (ids >= 0)
        grad_x, grad_w, _ = buffer.combine(grad_x_r.to(x_r.dtype).contiguous(), handle, topk_weights=grad_w_r)
        it = iter(grads[2:])
        param_grads = [next(it) if p.requires_grad else None for p in ctx.params]
        return (grad_x, grad_w, None, None, None, None, *param_grads)


def dispatch_compute_combine(buffer: Buffer, x, topk_idx, topk_weights,
                             expert_fn: Callable[[int, torch.Tensor], torch.Tensor], num_experts: int,
                             params: Sequence[torch.Tensor] = ()):
    """The fused call, differentiable in x, topk_weights and `params` (what expert_fn uses)."""
    return _Fused.apply(x, topk_weights, buffer, topk_idx, expert_fn, num_experts, *params)
