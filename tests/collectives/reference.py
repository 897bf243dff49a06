"""Deterministic per-rank inputs and numpy references for the collective tests."""

from __future__ import annotations

import numpy as np

try:
    import torch
except ImportError:  # bfloat16 needs torch; the rest runs on numpy alone
    torch = None

DTYPES = ["int8", "uint8", "int32", "int64", "float16", "bfloat16", "float32", "float64"]
OPS = ["sum", "prod", "min", "max", "avg"]


def available_dtypes() -> list[str]:
    return [d for d in DTYPES if d != "bfloat16" or torch is not None]


def make(dtype: str, values: np.ndarray):
    """A buffer of `dtype` holding `values` (bfloat16 through torch)."""
    if dtype == "bfloat16":
        return torch.from_numpy(values.astype(np.float32)).to(torch.bfloat16)
    return values.astype(dtype)


def as_f64(buf) -> np.ndarray:
    if torch is not None and isinstance(buf, torch.Tensor):
        return buf.to(torch.float64).numpy()
    return np.asarray(buf, dtype=np.float64)


def zeros(dtype: str, n: int):
    return make(dtype, np.zeros(n))


def values(rank: int, n: int, dtype: str, op: str, seed: int = 0) -> np.ndarray:
    """Inputs small enough that prod/sum stay exact in every type over 4 ranks."""
    rng = np.random.default_rng(seed * 1000 + rank * 7 + n % 997)
    if op == "prod":
        return rng.integers(1, 3, n).astype(np.float64) * (1 if dtype.startswith("uint") else rng.choice([-1, 1], n))
    if dtype == "uint8":
        return rng.integers(0, 60, n).astype(np.float64)
    if dtype.startswith("int"):
        return rng.integers(-30, 30, n).astype(np.float64)
    return np.round(rng.standard_normal(n) * 8) / 4  # exact in every float type


def reduce_ref(inputs: list[np.ndarray], op: str, dtype: str) -> np.ndarray:
    stack = np.stack(inputs) if inputs and len(inputs[0]) else np.zeros((len(inputs), 0))
    if op == "sum":
        return stack.sum(0)
    if op == "prod":
        return stack.prod(0)
    if op == "min":
        return stack.min(0)
    if op == "max":
        return stack.max(0)
    s = stack.sum(0)
    if dtype.startswith("int") or dtype == "uint8":
        return np.trunc(s / len(inputs))
    return s / len(inputs)


def tolerance(dtype: str, op: str) -> float:
    if op != "avg":
        return 0.0  # inputs chosen so results are exact
    return {"float16": 2e-3, "bfloat16": 1e-2}.get(dtype, 1e-6)


def check(got, want: np.ndarray, dtype: str, op: str, what: str) -> None:
    got64 = as_f64(got)
    assert got64.shape == want.shape, f"{what}: shape {got64.shape} != {want.shape}"
    if not np.allclose(got64, want, rtol=tolerance(dtype, op), atol=tolerance(dtype, op)):
        bad = np.flatnonzero(~np.isclose(got64, want, rtol=tolerance(dtype, op), atol=tolerance(dtype, op)))
        raise AssertionError(f"{what}: {len(bad)} wrong, first at {bad[0]}: got {got64[bad[0]]}, want {want[bad[0]]}")
