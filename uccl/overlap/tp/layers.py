"""Megatron's tensor-parallel linear layers on the fused ops.

ColumnParallelLinear splits the weight's output features across the group, RowParallelLinear
its input features. With sequence_parallel, activations between them are split along the
sequence (dim 0, Megatron's [s, b, h] layout): the column layer's input gather runs fused
with its GEMM (all_gather_matmul) and the row layer's output reduce-scatter fused with
its GEMM (matmul_reduce_scatter), in forward and backward. Like Megatron, forward returns
(output, output_bias), output_bias set only with skip_bias_add; the gradient of a
parameter replicated across sequence-parallel ranks (the row layer's bias) is partial on
each rank until sync_sequence_parallel_grads() sums it.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.distributed as dist

from uccl.overlap._group import all_gather_single, resolve_group
from uccl.overlap.tp.autograd import all_gather_matmul, matmul_reduce_scatter
from uccl.overlap.tp.mlp import parallel_mlp


def _gather_last(x: torch.Tensor, pg) -> torch.Tensor:
    world = dist.get_world_size(pg)
    out = torch.empty((world, *x.shape), dtype=x.dtype, device=x.device)
    all_gather_single(out, x.contiguous(), pg)
    return torch.cat(out.unbind(0), dim=-1)


def _split_last(x: torch.Tensor, pg) -> torch.Tensor:
    return x.chunk(dist.get_world_size(pg), dim=-1)[dist.get_rank(pg)].contiguous()


class _CopyToRegion(torch.autograd.Function):
    """Identity forward; the gradient is summed over the group (the input was replicated)."""

    @staticmethod
    def forward(ctx, x, pg):
        ctx.pg = pg
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        g = g.contiguous().clone()
        dist.all_reduce(g, group=ctx.pg)
        return g, None


class _ReduceFromRegion(torch.autograd.Function):
    """Sum over the group forward; identity backward."""

    @staticmethod
    def forward(ctx, x, pg):
        x = x.contiguous().clone()
        dist.all_reduce(x, group=pg)
        return x

    @staticmethod
    def backward(ctx, g):
        return g, None


class _GatherFromRegion(torch.autograd.Function):
    """Gather along the last dim forward; keep this rank's slice backward."""

    @staticmethod
    def forward(ctx, x, pg):
        ctx.pg = pg
        return _gather_last(x, pg)

    @staticmethod
    def backward(ctx, g):
        return _split_last(g, ctx.pg), None


class _ScatterToRegion(torch.autograd.Function):
    """Keep this rank's slice of the last dim forward; gather backward."""

    @staticmethod
    def forward(ctx, x, pg):
        ctx.pg = pg
        return _split_last(x, pg)

    @staticmethod
    def backward(ctx, g):
        return _gather_last(g, ctx.pg), None


def _sharded_weight(out_features: int, in_features: int, dim: int, pg, init_method: Callable, dtype, keep: bool):
    """Megatron's CPU initialization: the full (master) weight from the default RNG, which
    every rank seeds alike, then this rank's slice along `dim`."""
    master = torch.empty(out_features, in_features, dtype=torch.float32)
    init_method(master)
    world, rank = dist.get_world_size(pg), dist.get_rank(pg)
    shard = master.chunk(world, dim=dim)[rank].to(dtype).contiguous()
    return torch.nn.Parameter(shard), (master if keep else None)


def _divide(n: int, world: int, what: str, rank: int) -> int:
    if n % world:
        raise ValueError(f"rank {rank}: {what} {n} is not divisible by the tensor-parallel size {world}")
    return n // world


class ColumnParallelLinear(torch.nn.Module):
    """Y = X A^T + b with A split by rows (output features) across the group."""

    def __init__(self, input_size: int, output_size: int, *, bias: bool = True, gather_output: bool = True,
                 init_method: Callable = torch.nn.init.xavier_normal_, skip_bias_add: bool = False,
                 sequence_parallel: bool = False, params_dtype: torch.dtype = torch.float32,
                 keep_master_weight_for_test: bool = False, group: Any = None) -> None:
        super().__init__()
        self.group = resolve_group(group)
        world, rank = dist.get_world_size(self.group), dist.get_rank(self.group)
        if sequence_parallel and gather_output:
            raise ValueError(f"rank {rank}: ColumnParallelLinear: sequence_parallel needs gather_output=False")
        self.input_size, self.output_size = input_size, output_size
        self.output_size_per_partition = _divide(output_size, world, "output_size", rank)
        self.gather_output, self.skip_bias_add, self.sequence_parallel = gather_output, skip_bias_add, sequence_parallel
        self.weight, self.master_weight = _sharded_weight(output_size, input_size, 0, self.group, init_method,
                                                          params_dtype, keep_master_weight_for_test)
        self.bias = torch.nn.Parameter(torch.zeros(self.output_size_per_partition, dtype=params_dtype)) \
            if bias else None

    def forward(self, x: torch.Tensor):
        if self.sequence_parallel:
            _, (y,) = all_gather_matmul(x, [self.weight.t()], 0, self.group, return_a=False)
        else:
            y = torch.matmul(_CopyToRegion.apply(x, self.group), self.weight.t())
        if self.bias is not None and not self.skip_bias_add:
            y = y + self.bias
        if self.gather_output:
            y = _GatherFromRegion.apply(y, self.group)
        return y, (self.bias if self.skip_bias_add else None)


class RowParallelLinear(torch.nn.Module):
    """Y = X A^T + b with A split by columns (input features) across the group; b replicated."""

    def __init__(self, input_size: int, output_size: int, *, bias: bool = True, input_is_parallel: bool = False,
                 init_method: Callable = torch.nn.init.xavier_normal_, skip_bias_add: bool = False,
                 sequence_parallel: bool = False, params_dtype: torch.dtype = torch.float32,
                 keep_master_weight_for_test: bool = False, group: Any = None) -> None:
        super().__init__()
        self.group = resolve_group(group)
        world, rank = dist.get_world_size(self.group), dist.get_rank(self.group)
        if sequence_parallel and not input_is_parallel:
            raise ValueError(f"rank {rank}: RowParallelLinear: sequence_parallel needs input_is_parallel=True")
        self.input_size, self.output_size = input_size, output_size
        self.input_size_per_partition = _divide(input_size, world, "input_size", rank)
        self.input_is_parallel, self.skip_bias_add = input_is_parallel, skip_bias_add
        self.sequence_parallel = sequence_parallel
        self.weight, self.master_weight = _sharded_weight(output_size, input_size, 1, self.group, init_method,
                                                          params_dtype, keep_master_weight_for_test)
        self.bias = torch.nn.Parameter(torch.zeros(output_size, dtype=params_dtype)) if bias else None
        if self.bias is not None:
            self.bias.sequence_parallel = sequence_parallel  # Megatron's mark: its grad is partial per rank

    def forward(self, x: torch.Tensor):
        if not self.input_is_parallel:
            x = _ScatterToRegion.apply(x, self.group)
        if self.sequence_parallel:
            y = matmul_reduce_scatter(x, self.weight.t(), "sum", 0, self.group)
        else:
            y = _ReduceFromRegion.apply(torch.matmul(x, self.weight.t()), self.group)
        if self.bias is not None and not self.skip_bias_add:
            y = y + self.bias
        return y, (self.bias if self.skip_bias_add else None)


class ParallelMLP(torch.nn.Module):
    """Megatron's ParallelMLP: dense_h_to_4h (ColumnParallelLinear) -> activation ->
    dense_4h_to_h (RowParallelLinear, skip_bias_add: forward returns (output, output_bias)).
    With sequence_parallel (the default) the whole block runs as one fused parallel_mlp
    (token pieces out, result pieces back); without it, the two layers in turn."""

    def __init__(self, hidden_size: int, ffn_hidden_size: int, *, bias: bool = True,
                 activation: Callable = torch.nn.functional.gelu, sequence_parallel: bool = True,
                 init_method: Callable = torch.nn.init.xavier_normal_,
                 output_layer_init_method: Optional[Callable] = None, params_dtype: torch.dtype = torch.float32,
                 keep_master_weight_for_test: bool = False, group: Any = None) -> None:
        super().__init__()
        self.group, self.activation, self.sequence_parallel = resolve_group(group), activation, sequence_parallel
        self.dense_h_to_4h = ColumnParallelLinear(
            hidden_size, ffn_hidden_size, bias=bias, gather_output=False, init_method=init_method,
            sequence_parallel=sequence_parallel, params_dtype=params_dtype,
            keep_master_weight_for_test=keep_master_weight_for_test, group=self.group)
        self.dense_4h_to_h = RowParallelLinear(
            ffn_hidden_size, hidden_size, bias=bias, input_is_parallel=True,
            init_method=output_layer_init_method or init_method, skip_bias_add=True,
            sequence_parallel=sequence_parallel, params_dtype=params_dtype,
            keep_master_weight_for_test=keep_master_weight_for_test, group=self.group)

    def forward(self, hidden_states: torch.Tensor):
        col, row = self.dense_h_to_4h, self.dense_4h_to_h
        if self.sequence_parallel:
            out = parallel_mlp(hidden_states, col.weight.t(), row.weight.t(), self.activation, self.group,
                               b1=col.bias)
            return out, row.bias
        h, _ = col(hidden_states)
        return row(self.activation(h))


def sync_sequence_parallel_grads(module: torch.nn.Module, group: Any = None) -> None:
    """Sums over the group the gradients of parameters marked `sequence_parallel` (replicated
    parameters that each rank applied to its own part of the sequence), as Megatron does
    before the optimizer step."""
    pg = resolve_group(group)
    for p in module.parameters():
        if getattr(p, "sequence_parallel", False) and p.grad is not None:
            dist.all_reduce(p.grad, group=pg)
