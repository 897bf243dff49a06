"""Gradients of the fused TP ops and of the Megatron layers against a single-process model:
every rank rebuilds all ranks' inputs, runs the whole computation locally with plain torch
ops, and compares its own shard's forward values and gradients with what the TP version
produced on the uccl group (fused path forced, so the overlapped backward is what runs)."""

from __future__ import annotations

import pytest
import torch

from tests.overlap.tp_ranks import assert_same, init, launch, splits


def _leaf(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).requires_grad_()


def _check_all_gather_matmul_grads(ctx, group, gd):
    from uccl.overlap import tp

    w, r = ctx.world_size, ctx.rank
    shard_shape = [(3, 2, 5), (2, 3, 5), (3, 2, 5)][gd]
    shards = [_leaf(shard_shape, 10 + q) for q in range(w)]
    k_full = 5 * w if gd == 2 else 5
    bs = [[_leaf((k_full, n), 20 + 2 * q + j) for j, n in enumerate((4, 3))] for q in range(w)]
    full = torch.cat(shards, dim=gd)
    weights = [[torch.randn(*full.shape[:-1], n, generator=torch.Generator().manual_seed(40 + q * 2 + j))
                for j, n in enumerate((4, 3))] for q in range(w)]
    ref = sum(((full @ b) * m).sum() for q in range(w) for b, m in zip(bs[q], weights[q]))
    ref.backward()
    mine, my_bs = shards[r].detach().clone().requires_grad_(), [b.detach().clone().requires_grad_() for b in bs[r]]
    a, outs = tp.all_gather_matmul(mine, my_bs, gd, group)
    assert_same(a.detach(), full.detach(), f"gather_dim {gd}: A")
    sum(((o * m).sum() for o, m in zip(outs, weights[r]))).backward()
    assert_same(mine.grad, shards[r].grad, f"gather_dim {gd}: grad of a_shard")
    for j in range(2):
        assert_same(my_bs[j].grad, bs[r][j].grad, f"gather_dim {gd}: grad of bs[{j}]")


def _check_matmul_reduce_scatter_grads(ctx, group, sd, reduce_op):
    from uccl.overlap import tp

    w, r = ctx.world_size, ctx.rank
    a_shape = [(2 * w, 3, 4), (3, w, 4), (3, 2, 4)][sd]
    n = 2 * w if sd == 2 else 5
    as_ = [_leaf(a_shape, 50 + q) for q in range(w)]
    bs = [_leaf((4, n), 60 + q) for q in range(w)]
    full = sum(a @ b for a, b in zip(as_, bs))
    if reduce_op == "avg":
        full = full / w
    chunks = full.chunk(w, dim=sd)
    weights = [torch.randn(chunks[q].shape, generator=torch.Generator().manual_seed(70 + q)) for q in range(w)]
    sum((c * m).sum() for c, m in zip(chunks, weights)).backward()
    a, b = as_[r].detach().clone().requires_grad_(), bs[r].detach().clone().requires_grad_()
    out = tp.matmul_reduce_scatter(a, b, reduce_op, sd, group)
    assert_same(out.detach(), chunks[r].detach().contiguous(), f"scatter_dim {sd}: output")
    (out * weights[r]).sum().backward()
    assert_same(a.grad, as_[r].grad, f"scatter_dim {sd} {reduce_op}: grad of a")
    assert_same(b.grad, bs[r].grad, f"scatter_dim {sd} {reduce_op}: grad of b")


def _check_layers(ctx, group, sequence_parallel):
    import torch.distributed as dist

    from uccl.overlap import tp

    w, r, s, batch, h, f = ctx.world_size, ctx.rank, 4 * ctx.world_size, 2, 6, 4 * ctx.world_size
    torch.manual_seed(123)  # every rank draws the same master weights
    col = tp.ColumnParallelLinear(h, f, gather_output=False,
                                  sequence_parallel=sequence_parallel,
                                  keep_master_weight_for_test=True, group=group)
    row = tp.RowParallelLinear(f, h, input_is_parallel=True, sequence_parallel=sequence_parallel,
                               keep_master_weight_for_test=True, group=group)
    with torch.no_grad():
        col.bias.copy_(torch.arange(f, dtype=torch.float32).chunk(w)[r] / f)
        row.bias.copy_(torch.linspace(-1, 1, h))
    ref1, ref2 = torch.nn.Linear(h, f), torch.nn.Linear(f, h)
    with torch.no_grad():
        ref1.weight.copy_(col.master_weight), ref1.bias.copy_(torch.arange(f, dtype=torch.float32) / f)
        ref2.weight.copy_(row.master_weight), ref2.bias.copy_(torch.linspace(-1, 1, h))
    x = _leaf((s, batch, h), 5)
    mask = torch.randn(s, batch, h, generator=torch.Generator().manual_seed(6))
    ref_out = ref2(torch.nn.functional.gelu(ref1(x)))
    (ref_out * mask).sum().backward()

    mine = (x.detach().chunk(w, dim=0)[r] if sequence_parallel else x.detach()).clone().requires_grad_()
    y, _ = col(mine)
    out, _ = row(torch.nn.functional.gelu(y))
    want = ref_out.chunk(w, dim=0)[r] if sequence_parallel else ref_out
    label = f"sequence_parallel={sequence_parallel}"
    assert_same(out.detach(), want.detach(), f"{label}: output")
    (out * (mask.chunk(w, dim=0)[r] if sequence_parallel else mask)).sum().backward()
    tp.sync_sequence_parallel_grads(row, group)
    assert_same(mine.grad, x.grad.chunk(w, dim=0)[r] if sequence_parallel else x.grad, f"{label}: grad of x")
    assert_same(col.weight.grad, ref1.weight.grad.chunk(w, dim=0)[r], f"{label}: column weight grad")
    assert_same(col.bias.grad, ref1.bias.grad.chunk(w)[r], f"{label}: column bias grad")
    assert_same(row.weight.grad, ref2.weight.grad.chunk(w, dim=1)[r], f"{label}: row weight grad")
    assert_same(row.bias.grad, ref2.bias.grad, f"{label}: row bias grad")
    dist.barrier(group=group)


def _check_gathered_layers(ctx, group):
    """gather_output=True into input_is_parallel=False (the layers' non-parallel ends)."""
    from uccl.overlap import tp

    w, r = ctx.world_size, ctx.rank
    torch.manual_seed(7)
    col = tp.ColumnParallelLinear(6, 2 * w, gather_output=True, keep_master_weight_for_test=True, group=group)
    row = tp.RowParallelLinear(2 * w, 3, input_is_parallel=False, bias=False, keep_master_weight_for_test=True,
                               group=group)
    x = _leaf((5, 6), 8)
    ref = (x @ col.master_weight.t()) @ row.master_weight.t()
    ref.sum().backward()
    mine = x.detach().clone().requires_grad_()
    y, _ = col(mine)
    out, _ = row(y)
    assert_same(out.detach(), ref.detach(), "gathered layers: output")
    out.sum().backward()
    assert_same(mine.grad, x.grad, "gathered layers: grad of x")


def _check_all(ctx, url):
    import torch.distributed as dist

    group, _ = init(ctx, url)
    with splits(2):
        for gd in range(3):
            _check_all_gather_matmul_grads(ctx, group, gd)
        for sd in range(3):
            _check_matmul_reduce_scatter_grads(ctx, group, sd, "sum" if sd != 1 else "avg")
        for sequence_parallel in (True, False):
            _check_layers(ctx, group, sequence_parallel)
        _check_gathered_layers(ctx, group)
    dist.destroy_process_group()


@pytest.mark.parametrize("transport", ["shm", "net"])
def test_gradients_match_single_process(transport):
    launch(_check_all, 2, transport)


@pytest.mark.long
@pytest.mark.parametrize("transport,world", [("shm", 3), ("net", 4)])
def test_gradients_match_single_process_long(transport, world):
    launch(_check_all, world, transport, timeout=300)
