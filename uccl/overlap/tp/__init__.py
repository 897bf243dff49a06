"""Tensor parallelism on uccl: GEMMs fused with their collectives, piece by piece.

- `all_gather_matmul`, `matmul_reduce_scatter` (differentiable), `all_reduce_rmsnorm`:
  the semantics of the unfused composition with PyTorch async-TP's argument conventions,
  overlapped on the net channel; `last_plan()` says which path the last call took.
- `ColumnParallelLinear`, `RowParallelLinear`: Megatron's layers on top.
"""

from uccl.overlap.tp.autograd import all_gather_matmul, matmul_reduce_scatter
from uccl.overlap.tp.layers import ColumnParallelLinear, RowParallelLinear, sync_sequence_parallel_grads
from uccl.overlap.tp.ops import all_reduce_rmsnorm
from uccl.overlap.tp.plan import Plan, last_plan

__all__ = ["all_gather_matmul", "matmul_reduce_scatter", "all_reduce_rmsnorm", "last_plan", "Plan",
           "ColumnParallelLinear", "RowParallelLinear", "sync_sequence_parallel_grads"]
