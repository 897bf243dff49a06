"""Code written for PyTorch's async-TP (torch.ops.symm_mem.fused_all_gather_matmul /
fused_matmul_reduce_scatter with a group name) runs unchanged on CPU tensors once
uccl.overlap.tp is imported: on a uccl group through uccl's fused ops (the plan says
so), on any other group through torch's own fallback; results equal the fallback's."""

from __future__ import annotations

import pytest
import torch

from tests.overlap.tp_ranks import assert_same, init, launch, rand, same_strides, splits

symm_mem = pytest.importorskip("torch.distributed._symmetric_memory")
if not hasattr(torch.ops.symm_mem, "fused_all_gather_matmul"):
    pytest.skip("this torch defines no symm_mem fused ops", allow_module_level=True)


def _async_tp_program(ctx, url):
    import torch.distributed as dist

    import uccl.overlap.tp as tp

    group, gloo = init(ctx, url)
    assert tp.symm_mem.hooked() == ["fused_all_gather_matmul", "fused_matmul_reduce_scatter"]
    symm_mem.enable_symm_mem_for_group(group.group_name)  # what async-TP programs call first
    a = rand((4, 3, 8), torch.float32, ctx.rank, small=True)
    b = rand((8, 6), torch.float32, 11, small=True)
    for gd in (0, 1):
        with splits(2):
            got_a, (got,) = torch.ops.symm_mem.fused_all_gather_matmul(a, [b], gd, group.group_name)
            assert tp.last_plan().path == "fused", tp.last_plan()
            rs = torch.ops.symm_mem.fused_matmul_reduce_scatter(a, b, "avg", 0, group.group_name)
            assert tp.last_plan().path == "fused", tp.last_plan()
        want_a, (want,) = symm_mem._fused_all_gather_matmul_fallback(a, [b], gd, gloo.group_name)
        assert_same([got_a, got], [want_a, want], f"fused_all_gather_matmul gather_dim {gd}")
        same_strides(got, want, f"fused_all_gather_matmul gather_dim {gd}")
        assert_same(rs, symm_mem._fused_matmul_reduce_scatter_fallback(a, b, "avg", 0, gloo.group_name),
                    "fused_matmul_reduce_scatter")
        # on a group that is not uccl's, the CPU kernel is torch's fallback
        other_a, (other,) = torch.ops.symm_mem.fused_all_gather_matmul(a, [b], gd, gloo.group_name)
        assert_same([other_a, other], [want_a, want], "fused_all_gather_matmul on gloo")
    none_a, _ = torch.ops.symm_mem.fused_all_gather_matmul(a, [b], 0, group.group_name, return_A=False)
    assert none_a is None
    dist.destroy_process_group()


def test_async_tp_ops_run_on_uccl_groups():
    launch(_async_tp_program, 2, "shm")
