"""Differences between the torch releases the backend supports (2.4 onward).

Method names that changed (each older name is kept as an alias on the process group):

    2.4 - 2.x                          2.13
    _allgather_base                    all_gather_single
    allgather_into_tensor_coalesced    all_gather_single_coalesced
    _reduce_scatter_base               reduce_scatter_single
    reduce_scatter_tensor_coalesced    reduce_scatter_single_coalesced
    alltoall_base                      all_to_all_single

Everything else that differs is probed here once, never by version number.

Every private torch name uccl relies on is listed here. Checked against torch 2.13 (the
CPU development machine); the GPU machine's 2.11 is not checked from here (a change there
shows as an AttributeError in tests/distributed/test_cuda.py):

  used by uccl
    torch._C._distributed_c10d          `c10d_native` below: the option classes
                                        (AllgatherOptions has no public name), PrefixStore, Work
    distributed_c10d._get_default_group `default_group()` below (monitored_barrier patch)

  torch's private hooks that ProcessGroupUCCL implements, because torch calls them on a
  Python process group (backend.py)
    ProcessGroup._get_backend(device)   -> a view with name(), options._timeout,
                                        supports_splitting, _set_sequence_number_for_group,
                                        perform_nocolor_split, comm_split_count
    ProcessGroup._set_group_name, _set_group_desc, _get_backend_name, _device_types
    the older collective names in ALIASES (_allgather_base, _reduce_scatter_base)

The public torch functions uccl replaces for uccl groups are in torch_patches.py.
"""

from __future__ import annotations

import datetime
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch._C import _distributed_c10d as c10d_native

# New name -> older names that torch releases still in use call instead.
ALIASES = {
    "all_gather_single": ("_allgather_base",),
    "all_gather_single_coalesced": ("allgather_into_tensor_coalesced",),
    "reduce_scatter_single": ("_reduce_scatter_base",),
    "reduce_scatter_single_coalesced": ("reduce_scatter_tensor_coalesced",),
    "all_to_all_single": ("alltoall_base",),
}

Work = getattr(c10d_native, "Work", None) or getattr(dist, "Work")
ProcessGroup = dist.ProcessGroup
ReduceOp = dist.ReduceOp

_RED_NAMES = ("SUM", "PRODUCT", "MIN", "MAX", "AVG", "BAND", "BOR", "BXOR", "PREMUL_SUM")
_RED_TYPES = {}
for _name in _RED_NAMES:
    _v = getattr(ReduceOp, _name, None)
    if _v is not None:
        _RED_TYPES[_v] = _name
_RED_INTS = {}
for _v, _name in _RED_TYPES.items():
    try:
        _RED_INTS[int(_v)] = _name
    except (TypeError, ValueError):
        pass


def red_op_name(op: Any) -> str:
    """'SUM', 'PRODUCT', ... for a ReduceOp, a ReduceOp.RedOpType, or an options object's reduceOp."""
    kind = getattr(op, "op", op)  # ReduceOp wraps a RedOpType in .op (PREMUL_SUM carries a factor too)
    try:
        name = _RED_INTS.get(int(kind))
    except (TypeError, ValueError):
        name = None
    if name is None:
        for candidate in _RED_NAMES:
            if kind == getattr(ReduceOp, candidate, object()):
                return candidate
        raise RuntimeError(f"ProcessGroupUCCL: unknown reduce op {op!r}")
    return name


def init_process_group_base(pg: ProcessGroup, store, rank: int, size: int) -> None:
    """ProcessGroup.__init__: (store, rank, size) where it exists (the group store is then
    reachable through get_group_store), else (rank, size)."""
    try:
        ProcessGroup.__init__(pg, store, rank, size)
    except TypeError:
        ProcessGroup.__init__(pg, rank, size)


def register_backend(name: str, creator, devices: list[str]) -> None:
    try:
        dist.Backend.register_backend(name, creator, extended_api=True, devices=devices)
    except TypeError:  # releases without the devices argument
        dist.Backend.register_backend(name, creator, extended_api=True)


def is_async(opts: Any) -> bool:
    """Whether the caller will wait later (torch's frontend sets asyncOp=False for blocking
    calls on releases that have the field; C++ callers and older releases always wait later)."""
    return bool(getattr(opts, "asyncOp", True))


def op_timeout(opts: Any, default: float) -> float:
    """Seconds an operation may take: opts.timeout where the caller set one (torch uses a
    negative value for "unset"), else the group's timeout."""
    t = getattr(opts, "timeout", None)
    if isinstance(t, datetime.timedelta):
        secs = t.total_seconds()
        if secs > 0:
            return secs
    return default


def timedelta_seconds(t: Optional[Any], default: float) -> float:
    """A wait(timeout) argument: timedelta(0) (torch's kNoTimeout) or None means the default."""
    if t is None:
        return default
    if isinstance(t, datetime.timedelta):
        secs = t.total_seconds()
    else:
        secs = float(t)
    return secs if secs > 0 else default


def make_future(devices: Optional[list] = None) -> torch.futures.Future:
    if devices:
        try:
            return torch.futures.Future(devices=devices)
        except TypeError:
            pass
    return torch.futures.Future()


def default_group() -> Optional[ProcessGroup]:
    """The default process group, or None before init_process_group."""
    import torch.distributed.distributed_c10d as c10d

    return c10d._get_default_group() if c10d.is_initialized() else None
