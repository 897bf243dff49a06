"""uccl.overlap.tp.parallel_mlp (the fused sequence-parallel MLP block) against the unfused
composition run on gloo (all_gather, GEMM, bias, activation, GEMM, reduce_scatter):
values, shapes and strides, fused at several piece counts and unfused, over shared memory
and the net channel; and ParallelMLP's forward and gradients against a single-process
torch.nn.Linear stack."""

from __future__ import annotations

import pytest
import torch

from tests.overlap.tp_ranks import assert_same, init, launch, rand, same_strides, splits

SPLITS = (1, 3, -1)   # one piece per block, three (ragged) pieces, the unfused path


def _reference(x, w1, w2, b1, act, gloo):
    """The unfused composition on a gloo group (the fused ops never fuse there)."""
    from uccl.overlap import tp

    _, (h,) = tp.all_gather_matmul(x, [w1], 0, gloo, return_a=False)
    if b1 is not None:
        h = h + b1
    return tp.matmul_reduce_scatter(act(h), w2, "sum", 0, gloo)


def _check_op(ctx, url, dtypes):
    import torch.distributed as dist

    from uccl.overlap import tp

    group, gloo = init(ctx, url)
    w, plans = ctx.world_size, []
    act = torch.nn.functional.gelu
    cases = [((5, 2, 6), 3 * w, 4, True), ((7, 6), 2, 6, False)]   # (x_shard, f per rank, n, b1?)
    for dtype in dtypes:
        for n_split in SPLITS:
            for i, (shape, f, n, bias) in enumerate(cases):
                label = f"parallel_mlp {dtype} splits={n_split} case {i}"
                x = rand(shape, dtype, 10 * ctx.rank + i, small=True)
                w1, w2 = rand((shape[-1], f), dtype, 20 + ctx.rank), rand((f, n), dtype, 30 + ctx.rank)
                b1 = rand((f,), dtype, 40 + ctx.rank) if bias else None
                with splits(n_split):
                    got = tp.parallel_mlp(x, w1, w2, act, group, b1=b1)
                plans.append(tp.last_plan())
                want = _reference(x, w1, w2, b1, act, gloo)
                assert_same(got, want, label)
                same_strides(got, want, label)
    dist.destroy_process_group()
    return plans


def _check_module(ctx, url):
    """ParallelMLP (fused and unfused) against one process running the whole MLP."""
    import torch.distributed as dist

    from uccl.overlap import tp

    group, _ = init(ctx, url)
    w, r, s, batch, h, f = ctx.world_size, ctx.rank, 3 * ctx.world_size, 2, 6, 4 * ctx.world_size
    for n_split in (2, -1):
        torch.manual_seed(5)   # every rank draws the same master weights
        mlp = tp.ParallelMLP(h, f, keep_master_weight_for_test=True, group=group)
        with torch.no_grad():
            mlp.dense_h_to_4h.bias.copy_(torch.linspace(-1, 1, f).chunk(w)[r])
        ref1, ref2 = torch.nn.Linear(h, f), torch.nn.Linear(f, h, bias=False)
        with torch.no_grad():
            ref1.weight.copy_(mlp.dense_h_to_4h.master_weight), ref1.bias.copy_(torch.linspace(-1, 1, f))
            ref2.weight.copy_(mlp.dense_4h_to_h.master_weight)
        x = torch.randn(s, batch, h, generator=torch.Generator().manual_seed(6)).requires_grad_()
        mask = torch.randn(s, batch, h, generator=torch.Generator().manual_seed(7))
        ref_out = ref2(torch.nn.functional.gelu(ref1(x)))
        (ref_out * mask).sum().backward()
        mine = x.detach().chunk(w, dim=0)[r].clone().requires_grad_()
        with splits(n_split):
            out, out_bias = mlp(mine)
            assert tp.last_plan().op == "parallel_mlp" and tp.last_plan().path == ("unfused" if n_split < 0 else "fused")
            (out * mask.chunk(w, dim=0)[r]).sum().backward()
        label = f"ParallelMLP splits={n_split}"
        assert out_bias is mlp.dense_4h_to_h.bias
        assert_same(out.detach(), ref_out.chunk(w, dim=0)[r].detach(), f"{label}: output")
        assert_same(mine.grad, x.grad.chunk(w, dim=0)[r], f"{label}: grad of x")
        assert_same(mlp.dense_h_to_4h.weight.grad, ref1.weight.grad.chunk(w, dim=0)[r], f"{label}: w1 grad")
        assert_same(mlp.dense_h_to_4h.bias.grad, ref1.bias.grad.chunk(w)[r], f"{label}: b1 grad")
        assert_same(mlp.dense_4h_to_h.weight.grad, ref2.weight.grad.chunk(w, dim=1)[r], f"{label}: w2 grad")
    dist.destroy_process_group()


def _check_plans(results: list) -> None:
    """Every rank took the same plans; UCCL_TP_SPLITS forced them."""
    assert all(r == results[0] for r in results), "ranks took different plans"
    assert all(p.op == "parallel_mlp" for p in results[0])
    fused = {p.pieces for p in results[0] if p.path == "fused"}
    assert fused >= {1, 3}, fused
    assert any(p.path == "unfused" and p.reason == "UCCL_TP_SPLITS=-1" for p in results[0])


@pytest.mark.parametrize("transport,world", [("shm", 2), ("net", 3)])
def test_parallel_mlp_matches_unfused_composition(transport, world):
    _check_plans(launch(_check_op, world, transport, (torch.float32, torch.bfloat16)))


@pytest.mark.parametrize("transport", ["net", "shm"])
def test_parallel_mlp_module_matches_single_process(transport):
    launch(_check_module, 2, transport)


@pytest.mark.long
@pytest.mark.parametrize("transport,world", [("shm", 3), ("net", 2), ("net", 4)])
def test_parallel_mlp_matches_unfused_composition_long(transport, world):
    _check_plans(launch(_check_op, world, transport, (torch.float32, torch.bfloat16, torch.float16), timeout=300))
