"""Each algorithm forced (UCCL_ALGO), over both channels, at a world size that is not
a power of two: the tuner picks by size, so this is where every algorithm is
exercised on every size class. The full dtype/op matrix runs with the tuner's
choices in test_correctness.py."""

from __future__ import annotations

import numpy as np
import pytest

from tests.collectives.reference import check, make, reduce_ref, values, zeros
from tests.collectives.test_correctness import movements, reductions, variable_sizes
from tests.collectives.transports import TRANSPORTS, transport_env
from uccl.testing import run_ranks

DTYPES = ["float32", "float16", "int32"]
OPS = ["sum", "avg", "max"]


def mixed_all_to_all_v(comm, W, r, label):
    """Blocks on both sides of the eager limit in one call, some empty."""
    sizes = [0, 3, 5000, 9000, 70000]
    split = np.array([[sizes[(q + 2 * j) % len(sizes)] for j in range(W)] for q in range(W)])
    send = values(r, int(split[r].sum()), "float32", "sum", seed=7)
    recv_counts = [int(split[q][r]) for q in range(W)]
    for inplace in (False, True):
        if inplace and list(split[r]) != recv_counts:
            continue
        buf = make("float32", send)
        out = buf if inplace else zeros("float32", sum(recv_counts))
        comm.all_to_all_v(buf, [int(x) for x in split[r]], out, recv_counts)
        pieces = []
        for q in range(W):
            sq = values(q, int(split[q].sum()), "float32", "sum", seed=7)
            off = int(split[q][:r].sum())
            pieces.append(sq[off:off + split[q][r]])
        check(out, np.concatenate(pieces), "float32", "sum", f"mixed all_to_all_v inplace={inplace} {label}")


def forced(ctx, algo):
    from uccl.collectives import Communicator

    comm = Communicator(ctx.bootstrap)
    W, r = comm.world_size, comm.rank
    for dtype in DTYPES:
        for n in (0, 1, 1001, (1 << 20) // 4 + 7):
            for op in OPS:
                for inplace in (False, True):
                    reductions(comm, W, r, dtype, op, n, inplace, f"{algo} {dtype} {op} n={n} inplace={inplace}")
            movements(comm, W, r, dtype, n, f"{algo} {dtype} n={n}")
        variable_sizes(comm, W, r, dtype, f"{algo} {dtype}")
    mixed_all_to_all_v(comm, W, r, algo)
    comm.barrier()
    return "ok"


@pytest.mark.timeout(900)
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("algo", ["direct", "ring", "recursive_doubling", "pairwise", "chain"])
def test_forced_algorithm(algo, transport):
    env = dict(transport_env(transport), UCCL_ALGO=algo)
    assert run_ranks(forced, 3, (algo,), env=env, timeout=800) == ["ok"] * 3


@pytest.mark.timeout(900)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_direct_with_several_channels(transport):
    """Three threads per rank split each large call (UCCL_CHANNELS)."""
    env = dict(transport_env(transport), UCCL_ALGO="direct", UCCL_CHANNELS="3", UCCL_CHUNK_SIZE="65536")
    assert run_ranks(forced, 3, ("direct x3",), env=env, timeout=800) == ["ok"] * 3


def _ranks_differ(ctx):
    """Rank 1 has no room in its shared arena, so it writes its block into its peers'
    outputs while ranks 0 and 2 publish theirs for the others to copy out; each rank
    cuts its block into other chunks with other channels (the direct all_reduce lets
    them differ: only what lands where is agreed)."""
    import os

    os.environ.update({0: {"UCCL_CHANNELS": "2", "UCCL_CHUNK_SIZE": "65536"},
                       1: {"UCCL_SHM_ARENA_BYTES": str(1 << 20), "UCCL_CHANNELS": "3", "UCCL_CHUNK_SIZE": "131072"},
                       2: {"UCCL_CHANNELS": "1", "UCCL_CHUNK_SIZE": "262144"}}[ctx.rank])
    from uccl.collectives import Communicator

    comm = Communicator(ctx.bootstrap)
    W, r = comm.world_size, comm.rank
    for n in (1001, (1 << 20) // 4 + 7, 3 << 20):
        for dtype, op in (("float32", "sum"), ("float16", "avg"), ("int32", "max")):
            ins = [values(q, n, dtype, op) for q in range(W)]
            for inplace in (False, True):
                buf = make(dtype, ins[r])
                out = buf if inplace else zeros(dtype, n)
                comm.all_reduce(buf, None if inplace else out, op=op)
                check(out, reduce_ref(ins, op, dtype), dtype, op, f"all_reduce {dtype} {op} n={n} inplace={inplace}")
    return "ok"


@pytest.mark.timeout(600)
def test_direct_all_reduce_published_and_written_blocks_mix():
    env = dict(transport_env("shm"), UCCL_ALGO="direct")
    assert run_ranks(_ranks_differ, 3, env=env, timeout=500) == ["ok"] * 3
