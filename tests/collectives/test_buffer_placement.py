"""Large all_reduce calls on buffers at every kind of address: byte offsets that put the
output just above the library's staging memory modulo 4 KiB (where stream_copy runs
backwards) and elsewhere. Results must not depend on it."""

from __future__ import annotations

import numpy as np
import pytest

from uccl.testing import run_ranks

OFFSETS = (0, 16, 32, 48, 256, 4080)


def placed(n: int, offset: int) -> np.ndarray:
    """n float32 at `offset` bytes past a 2 MiB boundary."""
    raw = np.zeros(n * 4 + (4 << 20), np.uint8)
    base = (-raw.ctypes.data) % (2 << 20)
    return raw[base + offset:base + offset + n * 4].view(np.float32)


def ranks_body(ctx, n):
    from uccl.collectives import Communicator

    comm = Communicator(ctx.bootstrap)
    W, r = comm.world_size, comm.rank
    want = sum(np.arange(n, dtype=np.float32) % 97 + q for q in range(W))
    for k, off in enumerate(OFFSETS):
        src = placed(n, off)
        dst = placed(n, OFFSETS[(k + r + 1) % len(OFFSETS)])  # each rank's output at another offset
        for call in range(2):
            src[...] = np.arange(n, dtype=np.float32) % 97 + r
            comm.all_reduce(src, dst)
            np.testing.assert_array_equal(dst, want, err_msg=f"out of place, offset {off}, call {call}")
            comm.all_reduce(src)
            np.testing.assert_array_equal(src, want, err_msg=f"in place, offset {off}, call {call}")
    comm.barrier()
    return "ok"


@pytest.mark.timeout(300)
def test_all_reduce_buffer_placement():
    n = (6 << 20) // 4 + 5  # 6 MiB and a bit: direct algorithm, streamed outputs
    assert run_ranks(ranks_body, 2, args=(n,), env={"UCCL_TRANSPORT": "shm"}, timeout=240) == ["ok", "ok"]
