"""Maps what users pass (numpy, torch, buffer-protocol objects) onto native element
types and reduction operators."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from uccl import _native
from uccl.errors import InvalidArgumentError

DT = _native.DataType

_NUMPY = {
    np.dtype(np.int8): DT.int8, np.dtype(np.uint8): DT.uint8, np.dtype(np.int32): DT.int32,
    np.dtype(np.int64): DT.int64, np.dtype(np.float16): DT.float16, np.dtype(np.float32): DT.float32,
    np.dtype(np.float64): DT.float64, np.dtype(np.bool_): DT.bool,
}
_TORCH_NAMES = {
    "torch.int8": DT.int8, "torch.uint8": DT.uint8, "torch.int32": DT.int32, "torch.int64": DT.int64,
    "torch.float16": DT.float16, "torch.bfloat16": DT.bfloat16, "torch.float32": DT.float32,
    "torch.float64": DT.float64, "torch.bool": DT.bool,
}
_FORMATS = {"b": DT.int8, "B": DT.uint8, "i": DT.int32, "l": DT.int64, "q": DT.int64, "e": DT.float16,
            "f": DT.float32, "d": DT.float64, "?": DT.bool}
OPS = {"sum": _native.ReduceOp.sum, "prod": _native.ReduceOp.prod, "min": _native.ReduceOp.min,
       "max": _native.ReduceOp.max, "avg": _native.ReduceOp.avg}


_TORCH: dict = {}  # torch dtype object -> native type, filled on first use


def dtype_of(buf: Any, where: str, fmt: Optional[str] = None) -> Any:
    """The native element type of a buffer (fmt: its buffer-protocol format, if known)."""
    if fmt is not None:
        dt = _FORMATS.get(fmt.lstrip("@=<"))
        if dt is not None:
            return dt
    if type(buf).__module__.startswith("torch"):
        dt = _TORCH.get(buf.dtype)
        if dt is None:
            dt = _TORCH_NAMES.get(str(buf.dtype))
            if dt is None:
                raise InvalidArgumentError(f"{where}: torch dtype {buf.dtype} is not supported")
            _TORCH[buf.dtype] = dt
        return dt
    if isinstance(buf, np.ndarray):
        if buf.dtype.name == "bfloat16":  # ml_dtypes' numpy bfloat16
            return DT.bfloat16
        dt = _NUMPY.get(buf.dtype)
        if dt is None:
            raise InvalidArgumentError(f"{where}: numpy dtype {buf.dtype} is not supported")
        return dt
    try:
        fmt = memoryview(buf).format.lstrip("@=<")
    except TypeError as exc:
        raise InvalidArgumentError(f"{where}: {type(buf).__name__} does not expose a buffer") from exc
    if fmt not in _FORMATS:
        raise InvalidArgumentError(f"{where}: buffer format {fmt!r} is not supported")
    return _FORMATS[fmt]


def op_of(op: Any, dtype: Any, where: str) -> Any:
    native = OPS.get(op) if type(op) is str else None
    if native is not None and not (native == _native.ReduceOp.avg and dtype == DT.bool):
        return native
    name = getattr(op, "name", op)
    name = str(name).lower().replace("reduceop.", "")
    if name not in OPS:
        raise InvalidArgumentError(f"{where}: unsupported reduce op {op!r} (sum, prod, min, max, avg)")
    if name == "avg" and dtype == DT.bool:
        raise InvalidArgumentError(f"{where}: avg is not defined for bool")
    return OPS[name]
