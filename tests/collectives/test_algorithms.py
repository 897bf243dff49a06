"""Each algorithm forced (UCCL_ALGO), over both channels, at a world size that is not
a power of two: the tuner picks by size, so this is where every algorithm is
exercised on every size class. The full dtype/op matrix runs with the tuner's
choices in test_correctness.py."""

from __future__ import annotations

import numpy as np
import pytest

from tests.collectives.reference import make, values, zeros, check
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
