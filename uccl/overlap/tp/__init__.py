"""Tensor parallelism on uccl: GEMMs fused with their collectives, piece by piece.

- `all_gather_matmul`, `matmul_reduce_scatter` (differentiable), `all_reduce_rmsnorm`:
  the semantics of the unfused composition with PyTorch async-TP's argument conventions,
  overlapped on the net channel; `last_plan()` says which path the last call took.
- `parallel_mlp`: the sequence-parallel MLP block (all-gather, GEMM, activation, GEMM,
  reduce-scatter) pipelined per token piece (differentiable).
- `ColumnParallelLinear`, `RowParallelLinear`, `ParallelMLP`: Megatron's layers on top.
- Importing this package serves torch's `torch.ops.symm_mem.fused_all_gather_matmul` /
  `fused_matmul_reduce_scatter` on CPU tensors with these ops (see symm_mem.py).
"""

from uccl.overlap.tp.autograd import all_gather_matmul, matmul_reduce_scatter
from uccl.overlap.tp.layers import ColumnParallelLinear, ParallelMLP, RowParallelLinear, sync_sequence_parallel_grads
from uccl.overlap.tp.mlp import parallel_mlp
from uccl.overlap.tp.ops import all_reduce_rmsnorm
from uccl.overlap.tp.plan import Plan, last_plan
from uccl.overlap.tp import symm_mem as _symm_mem

_symm_mem.register()

__all__ = ["all_gather_matmul", "matmul_reduce_scatter", "all_reduce_rmsnorm", "parallel_mlp", "last_plan",
           "Plan", "ColumnParallelLinear", "RowParallelLinear", "ParallelMLP", "sync_sequence_parallel_grads"]
