"""The three fused TP ops, each with its unfused composition (the semantics, output strides
included, of PyTorch's async-TP fallbacks) and a fused path that moves pieces over uccl's
transport while torch computes on the pieces that already landed."""

from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from uccl.overlap._group import (all_gather_single, group_transport, reduce_scatter_single, resolve_group,
                                  uccl_process_group)
from uccl.overlap.tp.pieces import Exchange
from uccl.overlap.tp.plan import Plan, bounds, make_plan

_HALF = (torch.float16, torch.bfloat16)


def _err(rank: int, op: str, msg: str) -> ValueError:
    return ValueError(f"rank {rank}: {op}: {msg}")


def _context(group: Any, t: torch.Tensor):
    """(torch group, uccl process group or None, rank, world, transport)."""
    pg = resolve_group(group)
    upg = uccl_process_group(pg)
    rank, world = dist.get_rank(pg), dist.get_world_size(pg)
    transport = group_transport(upg) if upg is not None and world > 1 else "none"
    return pg, upg, rank, world, transport


def _plan(op: str, upg, t: torch.Tensor, world: int, transport: str, block_bytes: int, rows: int) -> Plan:
    return make_plan(op, uccl=upg is not None, cpu=t.device.type == "cpu", world=world, transport=transport,
                     block_bytes=block_bytes, block_rows=rows)


def _ring(rank: int, world: int, step: int) -> int:
    return (rank + step) % world


# ---------------------------------------------------------------------------------------------
# all_gather_matmul
# ---------------------------------------------------------------------------------------------
def _check_ag(a_shard: torch.Tensor, bs: Sequence[torch.Tensor], gather_dim: int, rank: int) -> int:
    op = "all_gather_matmul"
    if a_shard.dim() < 2:
        raise _err(rank, op, f"a_shard must have at least 2 dims, got shape {tuple(a_shard.shape)}")
    if not -a_shard.dim() <= gather_dim < a_shard.dim():
        raise _err(rank, op, f"gather_dim {gather_dim} out of range for a {a_shard.dim()}-dim a_shard")
    if len(bs) == 0:
        raise _err(rank, op, "bs is empty")
    for i, b in enumerate(bs):
        if b.dim() != 2:
            raise _err(rank, op, f"bs[{i}] must be a matrix, got shape {tuple(b.shape)}")
        if b.dtype != a_shard.dtype:
            raise _err(rank, op, f"bs[{i}] is {b.dtype}, a_shard is {a_shard.dtype}")
    return gather_dim % a_shard.dim()


def _all_gather_matmul_unfused(a_shard, bs, gd, pg, world, return_a):
    """all_gather then matmul, laid out as torch's _fused_all_gather_matmul_fallback."""
    a = torch.empty((world * a_shard.shape[0], *a_shard.shape[1:]), dtype=a_shard.dtype, device=a_shard.device)
    all_gather_single(a, a_shard.contiguous(), pg)
    if gd == a_shard.dim() - 1:
        a_mm = torch.cat(a.chunk(world), dim=-1)
        return (a_mm if return_a else None), [torch.matmul(a_mm, b) for b in bs]
    a = a.view(world, *a_shard.shape).movedim(gd + 1, 1).flatten(0, 1)
    return (a.movedim(0, gd) if return_a else None), [torch.matmul(a, b).movedim(0, gd) for b in bs]


def _gather_pieces(upg, own: torch.Tensor, slots: torch.Tensor, rank: int, world: int, pieces: int,
                   on_own, on_piece) -> None:
    """Sends this rank's rows `own` ([m, k]) to every peer in `pieces` row pieces while
    their rows land in slots[src] ([world, m, k]); runs on_own() once everything is posted,
    then on_piece(src, lo, hi, rows) for each peer's piece as it lands (nearest peer first)."""
    ex = Exchange(upg, "all_gather_matmul")
    cuts = bounds(own.shape[0], pieces)
    posted = [[ex.recv(_ring(rank, world, -j), slots[_ring(rank, world, -j), lo:hi], i)
               for i, (lo, hi) in enumerate(cuts)] for j in range(1, world)]
    for i, (lo, hi) in enumerate(cuts):
        for j in range(1, world):
            ex.send(_ring(rank, world, j), own[lo:hi], i)
    on_own()
    slots[rank].copy_(own)
    for j in range(1, world):
        for (lo, hi), p in zip(cuts, posted[j - 1]):
            on_piece(_ring(rank, world, -j), lo, hi, ex.wait(p))
    ex.finish()


def _all_gather_matmul_rows(a_shard, bs, gd, upg, rank, world, pieces, return_a):
    """Gather along a non-last dim: the gathered A in gather-dim-first layout holds each
    rank's shard as one contiguous row range; each output row range is computed as soon
    as its rows landed (own shard first)."""
    x = a_shard.movedim(gd, 0).contiguous()           # [s, *rest, K]
    m, k = x[..., 0].numel(), x.shape[-1]
    gathered = torch.empty((world * x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
    outs = [torch.empty((world * x.shape[0], *x.shape[1:-1], b.shape[1]), dtype=x.dtype) for b in bs]
    out_flat = [o.view(world, m, -1) for o in outs]
    own = x.view(m, k)

    def on_own():
        for b, o in zip(bs, out_flat):
            torch.mm(own, b, out=o[rank])

    def on_piece(src, lo, hi, rows):
        for b, o in zip(bs, out_flat):
            torch.mm(rows, b, out=o[src, lo:hi])

    _gather_pieces(upg, own, gathered.view(world, m, k), rank, world, pieces, on_own, on_piece)
    return (gathered.movedim(0, gd) if return_a else None), [o.movedim(0, gd) for o in outs]


def _all_gather_matmul_k(a_shard, bs, upg, rank, world, pieces, return_a):
    """Gather along the last dim (K): out = own shard @ its rows of B (mm), then each peer's
    piece @ its rows of B added in (addmm_) as it lands."""
    x = a_shard.contiguous()
    lead, k = x.shape[:-1], x.shape[-1]
    m = x[..., 0].numel()
    for i, b in enumerate(bs):
        if b.shape[0] != world * k:
            raise _err(rank, "all_gather_matmul", f"bs[{i}] has {b.shape[0]} rows, the gathered K is {world * k}")
    shards = torch.empty((world, m, k), dtype=x.dtype, device=x.device)
    own = x.view(m, k)
    outs = [torch.empty((m, b.shape[1]), dtype=x.dtype) for b in bs]

    def on_own():
        for b, o in zip(bs, outs):
            torch.mm(own, b[rank * k:(rank + 1) * k], out=o)

    def on_piece(src, lo, hi, rows):
        for b, o in zip(bs, outs):
            o[lo:hi].addmm_(rows, b[src * k:(src + 1) * k])

    _gather_pieces(upg, own, shards, rank, world, pieces, on_own, on_piece)
    a = shards.movedim(0, 1).reshape(*lead, world * k) if return_a else None
    return a, [o.view(*lead, -1) for o in outs]


def all_gather_matmul_forward(a_shard: torch.Tensor, bs: Sequence[torch.Tensor], gather_dim: int,
                              group: Any = None, *, return_a: bool = True
                              ) -> Tuple[Optional[torch.Tensor], List[torch.Tensor]]:
    """(all_gather(a_shard, gather_dim) or None, [A @ B for B in bs]), computed piece by piece
    as the shards land: the local shard at once, then each peer's. (No autograd: see
    uccl.overlap.tp.autograd.all_gather_matmul.)"""
    pg, upg, rank, world, transport = _context(group, a_shard)
    gd = _check_ag(a_shard, bs, gather_dim, rank)
    rows = a_shard.numel() // a_shard.shape[-1] if a_shard.shape[-1] else 0
    plan = _plan("all_gather_matmul", upg, a_shard, world, transport, a_shard.numel() * a_shard.element_size(),
                 rows)
    if plan.path == "unfused":
        return _all_gather_matmul_unfused(a_shard, bs, gd, pg, world, return_a)
    if gd == a_shard.dim() - 1:
        return _all_gather_matmul_k(a_shard, bs, upg, rank, world, plan.pieces, return_a)
    return _all_gather_matmul_rows(a_shard, bs, gd, upg, rank, world, plan.pieces, return_a)


# ---------------------------------------------------------------------------------------------
# matmul_reduce_scatter
# ---------------------------------------------------------------------------------------------
def _check_rs(a: torch.Tensor, b: torch.Tensor, reduce_op: str, scatter_dim: int, rank: int, world: int) -> int:
    op = "matmul_reduce_scatter"
    if a.dim() < 2:
        raise _err(rank, op, f"a must have at least 2 dims, got shape {tuple(a.shape)}")
    if b.dim() != 2:
        raise _err(rank, op, f"b must be a matrix, got shape {tuple(b.shape)}")
    if b.dtype != a.dtype:
        raise _err(rank, op, f"b is {b.dtype}, a is {a.dtype}")
    if reduce_op not in ("sum", "avg"):
        raise _err(rank, op, f"reduce_op must be 'sum' or 'avg', got {reduce_op!r}")
    if not -a.dim() <= scatter_dim < a.dim():
        raise _err(rank, op, f"scatter_dim {scatter_dim} out of range for a {a.dim()}-dim a")
    sd = scatter_dim % a.dim()
    size = b.shape[1] if sd == a.dim() - 1 else a.shape[sd]
    if size % world:
        raise _err(rank, op, f"the scattered dim has size {size}, not divisible by the world size {world}")
    return sd


def _matmul_reduce_scatter_unfused(a, b, reduce_op, sd, pg, world):
    """a @ b, then reduce_scatter along scatter_dim as torch's funcol.reduce_scatter_tensor
    does it (chunks along the dim stacked along dim 0); the result is contiguous."""
    return reduce_scatter_along(a @ b, reduce_op, sd, pg, world)


def reduce_scatter_along(c: torch.Tensor, reduce_op: str, sd: int, pg, world: int) -> torch.Tensor:
    """reduce_scatter of c along dim sd, laid out as funcol.reduce_scatter_tensor's result."""
    if sd != 0:
        c = torch.cat(torch.chunk(c, world, dim=sd))
    out = torch.empty((c.shape[0] // world, *c.shape[1:]), dtype=c.dtype, device=c.device)
    reduce_scatter_single(out, c.contiguous(), pg)
    return out.div_(world) if reduce_op == "avg" else out


def _matmul_reduce_scatter_fused(a, b, reduce_op, sd, upg, rank, world, pieces):
    """Each peer's block of a @ b is computed (piece by piece) and sent while the next is
    computed; this rank's own block comes last, and the peers' blocks are added into it (in
    float32 for half types, rounded once) as they arrive."""
    last = sd == a.dim() - 1
    if last:
        x = a.reshape(-1, a.shape[-1])
        m, n = x.shape[0], b.shape[1] // world
        def block(p, lo, hi, out=None):  # noqa: E306
            return torch.mm(x[lo:hi], b[:, p * n:(p + 1) * n], out=out)
        out_shape = (*a.shape[:-1], n)
    else:
        xt = a.movedim(sd, 0).contiguous()
        k, n = a.shape[-1], b.shape[1]
        m = xt[..., 0].numel() // world
        x = xt.view(world, m, k)
        def block(p, lo, hi, out=None):  # noqa: E306
            return torch.mm(x[p, lo:hi], b, out=out)
        out_shape = (xt.shape[0] // world, *xt.shape[1:-1], n)
    sent = torch.empty((world, m, n), dtype=a.dtype)
    got = torch.empty((world, m, n), dtype=a.dtype)
    ex = Exchange(upg, "matmul_reduce_scatter")
    cuts = bounds(m, pieces)
    posted = [[ex.recv(_ring(rank, world, -j), got[_ring(rank, world, -j), lo:hi], i)
               for i, (lo, hi) in enumerate(cuts)] for j in range(1, world)]
    for j in range(1, world):
        dst = _ring(rank, world, j)
        for i, (lo, hi) in enumerate(cuts):
            block(dst, lo, hi, out=sent[dst, lo:hi])
            ex.send(dst, sent[dst, lo:hi], i)
    acc = block(rank, 0, m)
    if acc.dtype in _HALF:
        acc = acc.float()
    for j in range(1, world):
        for (lo, hi), p in zip(cuts, posted[j - 1]):
            acc[lo:hi].add_(ex.wait(p))
    ex.finish()
    if reduce_op == "avg":
        acc.div_(world)
    out = acc.to(a.dtype).view(out_shape)
    # the unfused path's result is a fresh contiguous tensor: its strides, size-1 dims included
    return out if last or sd == 0 else out.movedim(0, sd).clone(memory_format=torch.contiguous_format)


def matmul_reduce_scatter_forward(a: torch.Tensor, b: torch.Tensor, reduce_op: str, scatter_dim: int,
                                  group: Any = None) -> torch.Tensor:
    """reduce_scatter(a @ b, scatter_dim) with reduce_op "sum" or "avg". (No autograd: see
    uccl.overlap.tp.autograd.matmul_reduce_scatter.)"""
    pg, upg, rank, world, transport = _context(group, a)
    sd = _check_rs(a, b, reduce_op, scatter_dim, rank, world)
    rows = a.numel() // a.shape[-1] if a.shape[-1] else 0
    block_rows = rows if sd == a.dim() - 1 else rows // world
    block_bytes = block_rows * (b.shape[1] // (world if sd == a.dim() - 1 else 1)) * a.element_size()
    plan = _plan("matmul_reduce_scatter", upg, a, world, transport, block_bytes, block_rows)
    if plan.path == "unfused":
        return _matmul_reduce_scatter_unfused(a, b, reduce_op, sd, pg, world)
    return _matmul_reduce_scatter_fused(a, b, reduce_op, sd, upg, rank, world, plan.pieces)


# ---------------------------------------------------------------------------------------------
# all_reduce_rmsnorm
# ---------------------------------------------------------------------------------------------
def rmsnorm(y: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.nn.functional.rms_norm(y, (y.shape[-1],), weight, eps)


def _all_reduce_rmsnorm_unfused(x, residual, weight, eps, pg):
    y = x.clone(memory_format=torch.contiguous_format)
    dist.all_reduce(y, group=pg)
    y.add_(residual)
    return rmsnorm(y, weight, eps), y


def _all_reduce_rmsnorm_fused(x, residual, weight, eps, upg, rank, world):
    """TokenWeave's shape: the tokens in two halves; each half's all-reduce is a
    reduce-scatter, the residual added on this rank's share, an all-gather; the first
    half's add, gather and norm run while the second half is still being reduced. (The
    norm runs on the gathered half: gathering the normed rows too would double the
    gather's bytes, and the norm is cheap beside them.)"""
    comm = upg.communicator
    h = x.shape[-1]
    xf = x.reshape(-1, h).contiguous()
    rf = residual.reshape(-1, h)
    y = torch.empty_like(xf)
    halves = bounds(xf.shape[0], 2)
    shares, reduced, scattered = [], [], []
    for lo, hi in halves:
        cuts = bounds(hi - lo, world)
        counts = [(b - a) * h for a, b in cuts]
        share = torch.empty((cuts[rank][1] - cuts[rank][0], h), dtype=x.dtype)
        shares.append((cuts, counts, share))
        scattered.append(comm.reduce_scatter_v(xf[lo:hi], share, counts, async_op=True))
    gathered = []
    for (lo, hi), (cuts, counts, share), work in zip(halves, shares, scattered):
        work.wait()
        share.add_(rf[lo + cuts[rank][0]:lo + cuts[rank][1]])
        gathered.append(comm.all_gather_v(share, y[lo:hi], counts, async_op=True))
        reduced.append(share)
    normed = torch.empty_like(y)
    for (lo, hi), work in zip(halves, gathered):
        work.wait()
        normed[lo:hi] = rmsnorm(y[lo:hi], weight, eps)
    return normed.view(x.shape), y.view(x.shape)


def all_reduce_rmsnorm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6,
                       group: Any = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(rmsnorm(all_reduce(x) + residual) * weight, all_reduce(x) + residual)."""
    pg, upg, rank, world, transport = _context(group, x)
    op = "all_reduce_rmsnorm"
    if residual.shape != x.shape or residual.dtype != x.dtype:
        raise _err(rank, op, f"residual is {residual.dtype}{tuple(residual.shape)}, x is {x.dtype}{tuple(x.shape)}")
    if x.dim() < 1 or weight.shape != x.shape[-1:]:
        raise _err(rank, op, f"weight has shape {tuple(weight.shape)}, expected ({x.shape[-1] if x.dim() else ''},)")
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    # each half's share per rank is the block this op moves; both halves need a row per rank
    half_rows = rows // 2
    plan = _plan(op, upg, x, world, transport, (half_rows // max(world, 1)) * x.shape[-1] * x.element_size(),
                 2 if half_rows >= world else 0)
    if plan.path == "unfused":
        return _all_reduce_rmsnorm_unfused(x, residual, weight, eps, pg)
    return _all_reduce_rmsnorm_fused(x, residual, weight, eps, upg, rank, world)
