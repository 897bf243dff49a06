"""Every collective x op x dtype x size x in-place, against numpy, at world sizes 1-4."""

from __future__ import annotations

import numpy as np
import pytest

from tests.collectives.reference import OPS, available_dtypes, check, make, reduce_ref, values, zeros
from tests.collectives.transports import TRANSPORTS, transport_env
from uccl.testing import run_ranks

BIG = 32 << 20  # bytes


def counts_for(dtype: str) -> list[int]:
    esize = np.dtype("float16" if dtype == "bfloat16" else dtype).itemsize
    return [0, 1, 1001, (1 << 20) // esize + 7]


def reductions(comm, W, r, dtype, op, n, inplace, label):
    ins = [values(q, n, dtype, op) for q in range(W)]
    want = reduce_ref(ins, op, dtype)
    buf = make(dtype, ins[r])
    out = buf if inplace else zeros(dtype, n)
    comm.all_reduce(buf, None if inplace else out, op=op)
    check(out, want, dtype, op, f"all_reduce {label}")
    # reduce to the last rank; reduce_scatter with equal blocks of n
    root = W - 1
    buf, out = make(dtype, ins[r]), zeros(dtype, n)
    comm.reduce(buf, out, op=op, root=root)
    if r == root:
        check(out, want, dtype, op, f"reduce {label}")
    big_ins = [values(q, n * W, dtype, op, seed=1) for q in range(W)]
    big_want = reduce_ref(big_ins, op, dtype)
    out = zeros(dtype, n)
    comm.reduce_scatter(make(dtype, big_ins[r]), out, op=op)
    check(out, big_want[r * n:(r + 1) * n], dtype, op, f"reduce_scatter {label}")


def movements(comm, W, r, dtype, n, label):
    ins = [values(q, n, dtype, "sum", seed=2) for q in range(W)]
    out = zeros(dtype, n * W)
    comm.all_gather(make(dtype, ins[r]), out)
    check(out, np.concatenate(ins), dtype, "sum", f"all_gather {label}")
    root = W // 2
    buf = make(dtype, ins[r])
    comm.broadcast(buf, root=root)
    check(buf, ins[root], dtype, "sum", f"broadcast {label}")
    blocks = [values(q, n * W, dtype, "sum", seed=3) for q in range(W)]
    out = zeros(dtype, n * W)
    comm.all_to_all(make(dtype, blocks[r]), out)
    check(out, np.concatenate([blocks[q][r * n:(r + 1) * n] for q in range(W)]), dtype, "sum",
          f"all_to_all {label}")
    buf = make(dtype, blocks[r])
    comm.all_to_all(buf, buf)
    check(buf, np.concatenate([blocks[q][r * n:(r + 1) * n] for q in range(W)]), dtype, "sum",
          f"all_to_all in place {label}")
    gathered = zeros(dtype, n * W) if r == root else None
    comm.gather(make(dtype, ins[r]), gathered, root=root)
    if r == root:
        check(gathered, np.concatenate(ins), dtype, "sum", f"gather {label}")
    out = zeros(dtype, n)
    comm.scatter(make(dtype, blocks[root]) if r == root else None, out, root=root)
    check(out, blocks[root][r * n:(r + 1) * n], dtype, "sum", f"scatter {label}")


def variable_sizes(comm, W, r, dtype, label):
    rng = np.random.default_rng(42)
    counts = [int(c) for c in rng.integers(0, 2000, W)]
    ins = [values(q, counts[q], dtype, "sum", seed=4) for q in range(W)]
    out = zeros(dtype, sum(counts))
    comm.all_gather_v(make(dtype, ins[r]), out, counts)
    check(out, np.concatenate(ins), dtype, "sum", f"all_gather_v {label}")
    full = [values(q, sum(counts), dtype, "sum", seed=5) for q in range(W)]
    want = reduce_ref(full, "sum", dtype)
    out = zeros(dtype, counts[r])
    comm.reduce_scatter_v(make(dtype, full[r]), out, counts, op="sum")
    start = sum(counts[:r])
    check(out, want[start:start + counts[r]], dtype, "sum", f"reduce_scatter_v {label}")
    # all_to_all_v: rank q sends split[q][j] elements to rank j
    split = rng.integers(0, 500, (W, W))
    send = values(r, int(split[r].sum()), dtype, "sum", seed=6)
    recv_counts = [int(split[q][r]) for q in range(W)]
    out = zeros(dtype, sum(recv_counts))
    comm.all_to_all_v(make(dtype, send), [int(x) for x in split[r]], out, recv_counts)
    pieces = []
    for q in range(W):
        sq = values(q, int(split[q].sum()), dtype, "sum", seed=6)
        off = int(split[q][:r].sum())
        pieces.append(sq[off:off + split[q][r]])
    check(out, np.concatenate(pieces), dtype, "sum", f"all_to_all_v {label}")


def matrix(ctx, big: bool):
    from uccl.collectives import Communicator

    comm = Communicator(ctx.bootstrap)
    W, r = comm.world_size, comm.rank
    for dtype in available_dtypes():
        for n in counts_for(dtype):
            for op in OPS:
                for inplace in (False, True):
                    reductions(comm, W, r, dtype, op, n, inplace, f"{dtype} {op} n={n} inplace={inplace}")
            movements(comm, W, r, dtype, n, f"{dtype} n={n}")
        variable_sizes(comm, W, r, dtype, dtype)
    if big:
        big_messages(comm, W, r)
    comm.barrier()
    return "ok"


def big_messages(comm, W, r):
    """32 MiB per rank: every op on float32 (in place and not); the converting
    kernels (float16, bfloat16, int8) with sum; data movement on float32."""
    cases = [("float32", op, inplace) for op in OPS for inplace in (False, True)]
    cases += [(d, "sum", False) for d in ("float16", "bfloat16", "int8") if d in available_dtypes()]
    for dtype, op, inplace in cases:
        n = BIG // np.dtype("float16" if dtype == "bfloat16" else dtype).itemsize
        ins = [values(q, n, dtype, op) for q in range(W)]
        buf = make(dtype, ins[r])
        out = buf if inplace else zeros(dtype, n)
        comm.all_reduce(buf, None if inplace else out, op=op)
        check(out, reduce_ref(ins, op, dtype), dtype, op, f"all_reduce {dtype} {op} n={n} inplace={inplace}")
    movements(comm, W, r, "float32", BIG // 4 // W, "float32 32 MiB")


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_every_collective_against_numpy(world, transport):
    env = transport_env(transport)
    assert run_ranks(matrix, world, (world in (2, 3),), env=env, timeout=900) == ["ok"] * world
