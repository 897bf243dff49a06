"""Turns what users pass (numpy arrays, torch CPU tensors, buffer-protocol objects)
into (address, bytes, item size, read-only) for the native core."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from uccl.errors import InvalidArgumentError


@dataclass(frozen=True)
class BufferInfo:
    addr: int
    nbytes: int
    itemsize: int
    readonly: bool
    owner: Any  # keeps the memory alive while native code holds the address


def _is_torch_tensor(obj: Any) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "data_ptr")


def buffer_info(obj: Any, what: str = "buffer") -> BufferInfo:
    """Describes a contiguous host buffer; raises InvalidArgumentError for anything else."""
    if _is_torch_tensor(obj):
        if obj.device.type != "cpu":
            raise InvalidArgumentError(f"{what}: tensor on {obj.device} is not host memory")
        if not obj.is_contiguous():
            raise InvalidArgumentError(f"{what}: tensor is not contiguous")
        return BufferInfo(obj.data_ptr(), obj.numel() * obj.element_size(), obj.element_size(), False, obj)
    if isinstance(obj, np.ndarray):
        if not obj.flags.c_contiguous:
            raise InvalidArgumentError(f"{what}: array is not C-contiguous")
        return BufferInfo(obj.ctypes.data, obj.nbytes, obj.itemsize, not obj.flags.writeable, obj)
    try:
        view = memoryview(obj)
    except TypeError as exc:
        raise InvalidArgumentError(f"{what}: {type(obj).__name__} does not expose a buffer") from exc
    if not view.c_contiguous:
        raise InvalidArgumentError(f"{what}: buffer is not contiguous")
    arr = np.frombuffer(view.cast("B") if view.ndim != 1 or view.format != "B" else view, dtype=np.uint8)
    return BufferInfo(arr.ctypes.data if arr.size else 0, view.nbytes, view.itemsize, view.readonly, (obj, arr))
