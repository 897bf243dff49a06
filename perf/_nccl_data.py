"""nccl-tests' collectives for the perf scripts: element counts, busbw factors, buffers laid
out as nccl-tests lays them out (in place and not), inputs and the numpy reference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

# --------------------------------------------------------------------------------------
# Collectives: element counts and bus-bandwidth factors exactly as nccl-tests defines them
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Coll:
    name: str          # nccl-tests' test name
    reduces: bool      # has a reduction op (redop column)
    rooted: bool       # has a root (root column)
    factor: Callable[[int], float]  # busbw = algbw * factor(nranks)

    def counts(self, count: int, n: int) -> tuple[int, int, int]:
        """(send count, recv count, param count) for `count` elements of the size sweep."""
        per = count // n
        if self.name == "all_gather":
            return per, per * n, per
        if self.name == "reduce_scatter":
            return per * n, per, per
        if self.name == "alltoall":
            return per * n, per * n, per
        return count, count, count


COLLS = {
    "all_reduce": Coll("all_reduce", True, False, lambda n: 2 * (n - 1) / n),
    "all_gather": Coll("all_gather", False, False, lambda n: (n - 1) / n),
    "reduce_scatter": Coll("reduce_scatter", True, False, lambda n: (n - 1) / n),
    "alltoall": Coll("alltoall", False, False, lambda n: (n - 1) / n),
    "broadcast": Coll("broadcast", False, True, lambda n: 1.0),
    "reduce": Coll("reduce", True, True, lambda n: 1.0),
    "sendrecv": Coll("sendrecv", False, False, lambda n: 1.0),
}

# nccl-tests' type names (and the numpy spellings); bfloat16 lives in torch tensors.
DTYPES = {"int8": "int8", "uint8": "uint8", "int32": "int32", "int64": "int64", "half": "float16",
          "float16": "float16", "float": "float32", "float32": "float32", "double": "float64",
          "float64": "float64", "bfloat16": "bfloat16"}
NCCL_TYPE_NAME = {"int8": "int8", "uint8": "uint8", "int32": "int32", "int64": "int64", "float16": "half",
                  "float32": "float", "float64": "double", "bfloat16": "bfloat16"}
OPS = ("sum", "prod", "max", "min", "avg")


# --------------------------------------------------------------------------------------
# Buffers: numpy arrays, or torch tensors for bfloat16
# --------------------------------------------------------------------------------------


def alloc(count: int, dtype: str):
    if dtype == "bfloat16":
        import torch

        return torch.zeros(count, dtype=torch.bfloat16)
    return np.zeros(count, dtype=dtype)


def write(buf, values: np.ndarray) -> None:
    if isinstance(buf, np.ndarray):
        buf[...] = values.astype(buf.dtype)
    else:
        import torch

        buf.copy_(torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)))


def read(buf) -> np.ndarray:
    if isinstance(buf, np.ndarray):
        return buf.astype(np.float64)
    return buf.float().numpy().astype(np.float64)


def as_dtype(values: np.ndarray, dtype: str) -> np.ndarray:
    """values rounded to dtype, back in float64 (what a correct result holds)."""
    if dtype == "bfloat16":
        import torch

        return torch.from_numpy(values.astype(np.float32)).to(torch.bfloat16).float().numpy().astype(np.float64)
    return values.astype(dtype).astype(np.float64)


def inputs(rank: int, count: int, op: str, seed: int) -> np.ndarray:
    """Rank `rank`'s input: small integers, so sums/products are exact in every type."""
    i = np.arange(count, dtype=np.int64)
    if op == "prod":
        return ((i + rank + seed) % 2 + 1).astype(np.float64)
    return ((i * 7 + rank * 13 + seed * 3) % 11).astype(np.float64)


def reduce_ref(arrays: list[np.ndarray], op: str, dtype: str) -> np.ndarray:
    stack = np.stack(arrays)
    if op == "sum":
        out = stack.sum(0)
    elif op == "prod":
        out = stack.prod(0)
    elif op == "max":
        out = stack.max(0)
    elif op == "min":
        out = stack.min(0)
    else:  # avg: integer types truncate
        out = stack.sum(0) / len(arrays)
        if dtype.startswith(("int", "uint")):
            out = np.trunc(out)
    if dtype in ("int8", "uint8"):  # wrap around like the native integer kernels
        out = out.astype(np.int64).astype(dtype)
    return as_dtype(out, dtype)


def count_wrong(got: np.ndarray, want: np.ndarray, dtype: str, op: str) -> int:
    if got.shape != want.shape:
        return max(len(got), len(want))
    if op == "avg" and not dtype.startswith(("int", "uint")):
        tol = {"float16": 1e-2, "bfloat16": 1e-2}.get(dtype, 1e-6)
        return int(np.count_nonzero(~np.isclose(got, want, rtol=tol, atol=tol)))
    return int(np.count_nonzero(got != want))


# --------------------------------------------------------------------------------------
# Buffers for one (collective, size, in/out-of-place), laid out as nccl-tests does
# --------------------------------------------------------------------------------------


@dataclass
class Case:
    coll: Coll
    rank: int
    nranks: int
    dtype: str
    op: str
    root: int
    inplace: bool
    sendcount: int
    recvcount: int
    send: object = None   # view the collective reads
    recv: object = None   # view the collective writes (in place: a view of `full`)
    full: object = None   # in place: the one buffer both views live in

    @classmethod
    def make(cls, coll: Coll, count: int, rank: int, n: int, dtype: str, op: str, root: int, inplace: bool):
        sc, rc, _ = coll.counts(count, n)
        c = cls(coll, rank, n, dtype, op, root, inplace, sc, rc)
        if not inplace:
            c.send, c.recv = alloc(sc, dtype), alloc(rc, dtype)
        else:
            c.full = alloc(max(sc, rc), dtype)
            if coll.name == "all_gather":
                c.send, c.recv = c.full[rank * sc:(rank + 1) * sc], c.full
            elif coll.name == "reduce_scatter":
                c.send, c.recv = c.full, c.full[rank * rc:(rank + 1) * rc]
            else:
                c.send = c.recv = c.full
        return c

    def init(self, seed: int) -> None:
        """Fills the input with this rank's data (and poisons the output)."""
        if self.recv is not self.send and not self.inplace:
            write(self.recv, np.full(self.recvcount, 99.0))
        write(self.send, inputs(self.rank, self.sendcount, self.op, seed))

    def expected(self, seed: int) -> np.ndarray:
        n, r, name = self.nranks, self.rank, self.coll.name
        per = self.coll.counts(max(self.sendcount, self.recvcount), n)[2]
        ins = lambda rk: as_dtype(inputs(rk, self.sendcount, self.op, seed), self.dtype)  # noqa: E731
        if name == "all_reduce":
            return reduce_ref([ins(k) for k in range(n)], self.op, self.dtype)
        if name == "reduce_scatter":
            return reduce_ref([ins(k) for k in range(n)], self.op, self.dtype)[r * per:(r + 1) * per]
        if name == "all_gather":
            return np.concatenate([ins(k) for k in range(n)])
        if name == "alltoall":
            return np.concatenate([ins(k)[r * per:(r + 1) * per] for k in range(n)])
        if name == "broadcast":
            return ins(self.root)
        if name == "reduce":
            return reduce_ref([ins(k) for k in range(n)], self.op, self.dtype)
        if name == "sendrecv":
            return ins((r - 1) % n)
        raise ValueError(name)

    def wrong(self, result, seed: int) -> int:
        if self.coll.name == "reduce" and self.rank != self.root:
            return 0
        return count_wrong(read(result), self.expected(seed), self.dtype, self.op)


def itemsize(dtype: str) -> int:
    return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
