"""PyTorch async-TP compatibility: uccl's implementations of torch's
`torch.ops.symm_mem.fused_all_gather_matmul` and `fused_matmul_reduce_scatter` for CPU
tensors, so code written for async-TP runs unchanged on a uccl group.

torch defines these ops (in torch.distributed._symmetric_memory) with CUDA and Meta
kernels only; this registers a CPU kernel. On a uccl group it runs uccl's fused ops; on
any other group torch's own unfused fallback (what the Meta kernel computes). torch's
scaled (fp8) variants and its low-contention collectives are not hooked: they are
CUDA-only formats and symmetric-memory kernels with no CPU meaning.
"""

from __future__ import annotations

from typing import List

import torch

OPS = ("fused_all_gather_matmul", "fused_matmul_reduce_scatter")
_lib = None


def _torch_symm_mem():
    """torch's module that defines the ops (None where this torch has none)."""
    try:
        import torch.distributed._symmetric_memory as symm_mem
    except ImportError:
        return None
    return symm_mem if all(hasattr(torch.ops.symm_mem, op) for op in OPS) else None


def _all_gather_matmul_cpu(a_shard: torch.Tensor, bs: List[torch.Tensor], gather_dim: int, group_name: str, *,
                           return_A: bool = True):
    from uccl.overlap._group import uccl_process_group
    from uccl.overlap.tp.ops import all_gather_matmul_forward

    if uccl_process_group(group_name) is None:
        return _torch_symm_mem()._fused_all_gather_matmul_fallback(a_shard, bs, gather_dim, group_name,
                                                                   return_A=return_A)
    return all_gather_matmul_forward(a_shard, bs, gather_dim, group_name, return_a=return_A)


def _matmul_reduce_scatter_cpu(a: torch.Tensor, b: torch.Tensor, reduce_op: str, scatter_dim: int,
                               group_name: str) -> torch.Tensor:
    from uccl.overlap._group import uccl_process_group
    from uccl.overlap.tp.ops import matmul_reduce_scatter_forward

    if uccl_process_group(group_name) is None:
        return _torch_symm_mem()._fused_matmul_reduce_scatter_fallback(a, b, reduce_op, scatter_dim, group_name)
    return matmul_reduce_scatter_forward(a, b, reduce_op, scatter_dim, group_name)


def register() -> List[str]:
    """Registers the CPU kernels (once); returns the ops now served by uccl on the CPU.
    An op this torch lacks, or one that already has a CPU kernel, is left alone."""
    global _lib
    if _torch_symm_mem() is None:
        return []
    if _lib is None:
        lib = torch.library.Library("symm_mem", "IMPL")
        for op, fn in zip(OPS, (_all_gather_matmul_cpu, _matmul_reduce_scatter_cpu)):
            if not torch._C._dispatch_has_kernel_for_dispatch_key(f"symm_mem::{op}", "CPU"):
                lib.impl(op, fn, "CPU")
        _lib = lib
    return hooked()


def hooked() -> List[str]:
    """The ops whose CPU kernel is uccl's."""
    if _lib is None:
        return []
    return [op for op in OPS if torch._C._dispatch_has_kernel_for_dispatch_key(f"symm_mem::{op}", "CPU")]

