"""Turns what users pass (numpy arrays, torch CPU tensors, buffer-protocol objects)
into (address, bytes, item size, read-only) for the native core."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

from uccl import _native
from uccl.errors import InvalidArgumentError


class BufferInfo(NamedTuple):
    addr: int
    nbytes: int
    itemsize: int
    readonly: bool
    owner: Any  # keeps the memory alive while native code holds the address
    fmt: Optional[str]  # buffer-protocol format ('f', 'e', ...); None for torch tensors


def is_torch_tensor(obj: Any) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "data_ptr")


def buffer_info(obj: Any, what: str = "buffer", writable: bool = False) -> BufferInfo:
    """Describes a contiguous host buffer; raises InvalidArgumentError for anything else."""
    if is_torch_tensor(obj):
        if obj.device.type != "cpu":
            raise InvalidArgumentError(f"{what}: tensor on {obj.device} is not host memory")
        if not obj.is_contiguous():
            raise InvalidArgumentError(f"{what}: tensor is not contiguous")
        return BufferInfo(obj.data_ptr(), obj.numel() * obj.element_size(), obj.element_size(), False, obj, None)
    try:
        addr, nbytes, itemsize, readonly, fmt = _native.buffer_info(obj, False)
    except (BufferError, ValueError, TypeError) as exc:
        text = str(exc)
        if "contiguous" in text:
            raise InvalidArgumentError(f"{what}: buffer is not contiguous") from exc
        raise InvalidArgumentError(f"{what}: {type(obj).__name__} does not expose a buffer ({text})") from exc
    if writable and readonly:
        raise InvalidArgumentError(f"{what}: buffer is read-only")
    return BufferInfo(addr, nbytes, itemsize, readonly, obj, fmt)
