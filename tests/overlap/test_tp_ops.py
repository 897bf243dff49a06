"""uccl.overlap.tp's three ops against PyTorch's own unfused compositions run on gloo
(torch.distributed._symmetric_memory's fallbacks: all_gather / reduce_scatter, then
matmul), over shared memory and the net channel: values, dtypes, shapes and strides,
for the fused path at several piece counts and for the unfused path; the plan taken is
the same on every rank and follows UCCL_TP_SPLITS."""

from __future__ import annotations

import pytest
import torch

from tests.overlap.tp_ranks import assert_same, init, launch, rand, same_strides, splits

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
SPLITS = (1, 3, -1)   # one piece per block, three pieces (ragged cuts), the unfused path


def _ag_cases(world: int):
    """(a_shard shape, gather_dim, [B shapes]): every gather dim, odd sizes, one and two Bs."""
    return [((3, 5, 7), 0, [(7, 5)]), ((3, 5, 7), 1, [(7, 4), (7, 9)]), ((3, 5, 7), 2, [(7 * world, 6)]),
            ((5, 3), 0, [(3, 2), (3, 1)]), ((4, 3), 1, [(3 * world, 5), (3 * world, 2)])]


def _rs_cases(world: int):
    """(a shape, b shape, scatter_dim, reduce_op): every scatter dim, the last one splitting N."""
    return [((2 * world, 3, 7), (7, 5), 0, "sum"), ((3, world, 7), (7, 5), 1, "avg"),
            ((3, 5, 7), (7, 2 * world), 2, "sum"), ((3 * world, 5), (5, 3), 0, "avg"),
            ((3, 7), (7, world), 1, "sum")]


def _check_ops(ctx, url):
    import torch.distributed as dist
    from torch.distributed._symmetric_memory import (_fused_all_gather_matmul_fallback,
                                                     _fused_matmul_reduce_scatter_fallback)

    from uccl.overlap import tp

    group, gloo = init(ctx, url)
    w, seed, plans = ctx.world_size, 100 * ctx.rank, []
    for dtype in DTYPES:
        for n_split in SPLITS:
            with splits(n_split):
                for i, (shape, gd, b_shapes) in enumerate(_ag_cases(w)):
                    label = f"all_gather_matmul {dtype} splits={n_split} case {i}"
                    a = rand(shape, dtype, seed + i, small=True)
                    bs = [rand(s, dtype, 7 + j, small=True) for j, s in enumerate(b_shapes)]
                    got_a, got = tp.all_gather_matmul(a, bs, gd, group)
                    plans.append(tp.last_plan())
                    want_a, want = _fused_all_gather_matmul_fallback(a, bs, gd, gloo.group_name)
                    assert_same(got_a, want_a, label + " A")
                    same_strides(got_a, want_a, label + " A")
                    assert_same(got, want, label)
                    for g, wt in zip(got, want):
                        same_strides(g, wt, label)
                    none_a, again = tp.all_gather_matmul(a, bs, gd, group, return_a=False)
                    assert none_a is None
                    assert_same(again, want, label + " return_a=False")
                for i, (a_shape, b_shape, sd, rop) in enumerate(_rs_cases(w)):
                    label = f"matmul_reduce_scatter {dtype} splits={n_split} case {i}"
                    a, b = rand(a_shape, dtype, seed + i, small=True), rand(b_shape, dtype, 9, small=True)
                    got = tp.matmul_reduce_scatter(a, b, rop, sd, group)
                    plans.append(tp.last_plan())
                    want = _fused_matmul_reduce_scatter_fallback(a, b, rop, sd, gloo.group_name)
                    assert_same(got, want, label)
                    same_strides(got, want, label)
                for tokens in (2 * w + 1, 7):
                    label = f"all_reduce_rmsnorm {dtype} splits={n_split} tokens={tokens}"
                    x = rand((tokens, 9), dtype, seed + tokens)
                    residual, weight = rand((tokens, 9), dtype, 3), rand((9,), dtype, 4, small=True)
                    normed, y = tp.all_reduce_rmsnorm(x, residual, weight, 1e-5, group)
                    plans.append(tp.last_plan())
                    want_y = x.clone()
                    dist.all_reduce(want_y, group=gloo)
                    want_y += residual
                    assert_same(y, want_y, label + " residual out")
                    assert_same(normed, torch.nn.functional.rms_norm(want_y, (9,), weight, 1e-5), label)
                    same_strides(normed, want_y, label)
    with splits(0):  # the plan's own choice: one host never fuses
        tp.all_gather_matmul(rand((256, 64), torch.float32, seed, small=True), [torch.ones(64, 8)], 0, group)
        auto = tp.last_plan()
    assert auto.path == "unfused" and auto.transport == ("shm" if _transport() == "shm" else "loopback"), auto
    dist.destroy_process_group()
    return plans


def _transport() -> str:
    import os

    return os.environ["UCCL_TRANSPORT"]


def _check_plans(results: list) -> None:
    """The plan of every call is the same on every rank, and follows UCCL_TP_SPLITS."""
    assert all(r == results[0] for r in results), "ranks took different plans"
    for plan in results[0]:
        assert plan.path in ("fused", "unfused")
    fused = [p for p in results[0] if p.path == "fused"]
    assert fused and all(p.reason.startswith("UCCL_TP_SPLITS=") for p in fused)
    assert {p.pieces for p in fused if p.op != "all_reduce_rmsnorm"} >= {1, 3}
    assert any(p.path == "unfused" and p.reason == "UCCL_TP_SPLITS=-1" for p in results[0])


@pytest.mark.parametrize("transport,world", [("shm", 2), ("net", 3)])
def test_ops_match_unfused_composition(transport, world):
    _check_plans(launch(_check_ops, world, transport))


@pytest.mark.long
@pytest.mark.parametrize("transport,world", [("shm", 3), ("shm", 4), ("net", 2), ("net", 4)])
def test_ops_match_unfused_composition_long(transport, world):
    _check_plans(launch(_check_ops, world, transport, timeout=400))


def _check_errors(ctx, url):
    import torch.distributed as dist

    from uccl.overlap import tp

    group, _ = init(ctx, url)
    a = torch.ones(4, 3)
    with pytest.raises(ValueError, match=rf"rank {ctx.rank}: all_gather_matmul: bs\[0\] is torch.float64"):
        tp.all_gather_matmul(a, [torch.ones(3, 2, dtype=torch.float64)], 0, group)
    with pytest.raises(ValueError, match=rf"rank {ctx.rank}: all_gather_matmul: gather_dim 2 out of range"):
        tp.all_gather_matmul(a, [torch.ones(3, 2)], 2, group)
    with pytest.raises(ValueError, match=rf"rank {ctx.rank}: matmul_reduce_scatter: the scattered dim has size 3"):
        tp.matmul_reduce_scatter(torch.ones(3, 3), torch.ones(3, 2), "sum", 0, group)
    with pytest.raises(ValueError, match=rf"rank {ctx.rank}: matmul_reduce_scatter: reduce_op must be"):
        tp.matmul_reduce_scatter(a, torch.ones(3, 2), "max", 0, group)
    with pytest.raises(ValueError, match=rf"rank {ctx.rank}: all_reduce_rmsnorm: weight has shape"):
        tp.all_reduce_rmsnorm(a, a, torch.ones(4), 1e-6, group)
    dist.destroy_process_group()


def test_bad_arguments_name_rank_and_op():
    launch(_check_errors, 2, "shm")


def _check_cuda(ctx, url):
    import torch.distributed as dist

    from uccl.overlap import tp

    group, _ = init(ctx, url)
    torch.cuda.set_device(ctx.rank % torch.cuda.device_count())
    a, b = rand((4, 3, 8), torch.float32, ctx.rank, small=True), rand((8, 6), torch.float32, 5, small=True)
    x, res, w = rand((6, 8), torch.float32, ctx.rank), rand((6, 8), torch.float32, 1), torch.ones(8)
    want = [tp.all_gather_matmul(a, [b], 1, group)[1][0], tp.matmul_reduce_scatter(a, b, "sum", 0, group),
            *tp.all_reduce_rmsnorm(x, res, w, 1e-6, group)]
    got = [tp.all_gather_matmul(a.cuda(), [b.cuda()], 1, group)[1][0],
           tp.matmul_reduce_scatter(a.cuda(), b.cuda(), "sum", 0, group),
           *tp.all_reduce_rmsnorm(x.cuda(), res.cuda(), w.cuda(), 1e-6, group)]
    assert tp.last_plan().reason == "tensors not on the CPU"
    assert_same([g.cpu() for g in got], want, "CUDA tensors")
    dist.destroy_process_group()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_tensors_gemm_on_the_gpu_transport_on_the_host():
    """CUDA tensors: GEMMs on the GPU, the collectives staged through the host by the backend
    (the unfused path: the fused one is CPU-only so far); results equal the CPU ones."""
    launch(_check_cuda, 2, "shm")
