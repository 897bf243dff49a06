"""Tensor parallelism on uccl: GEMMs fused with their collectives, piece by piece.

- `all_gather_matmul`, `matmul_reduce_scatter`, `all_reduce_rmsnorm`: the semantics of
  the unfused composition (PyTorch async-TP's argument conventions), overlapped on the
  net channel; `last_plan()` says which path the last call took and in how many pieces.
- `ColumnParallelLinear`, `RowParallelLinear`: Megatron's layers on top, with autograd.
"""

from uccl.overlap.tp.ops import all_gather_matmul, all_reduce_rmsnorm, matmul_reduce_scatter
from uccl.overlap.tp.plan import Plan, last_plan

__all__ = ["all_gather_matmul", "matmul_reduce_scatter", "all_reduce_rmsnorm", "last_plan", "Plan"]
