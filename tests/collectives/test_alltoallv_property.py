"""Property test: all_to_all_v delivers exactly what every sender meant for every
receiver, for any count matrix (zeros, skew, uneven totals) hypothesis comes up with.

Every rank runs the same derandomized example sequence in lockstep (no shrinking, so
the ranks never diverge); each checks what it received against the reference."""

from __future__ import annotations

import numpy as np
import pytest

from tests.collectives.transports import TRANSPORTS, transport_env
from uccl.testing import run_ranks


def payload(src: int, dst: int, n: int) -> np.ndarray:
    return (np.arange(n, dtype=np.int64) * 1000003 + src * 7919 + dst * 104729) % 2**31


def lockstep(ctx, examples: int):
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    from uccl.collectives import Communicator

    comm = Communicator(ctx.bootstrap)
    W, r = comm.world_size, comm.rank
    counts = st.integers(0, 3000) | st.sampled_from([0, 1, 65536 + 3])
    matrices = st.lists(st.lists(counts, min_size=W, max_size=W), min_size=W, max_size=W)
    seen = []

    @settings(max_examples=examples, derandomize=True, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(matrix=matrices, gap=st.integers(0, 5))
    def check(matrix, gap):
        # matrix[i][j]: elements rank i sends to rank j; `gap` leaves holes between blocks.
        send_counts = matrix[r]
        recv_counts = [matrix[q][r] for q in range(W)]
        send_displs = list(np.cumsum([0] + [c + gap for c in send_counts[:-1]]))
        recv_displs = list(np.cumsum([0] + [c + gap for c in recv_counts[:-1]]))
        send = np.full(int(send_displs[-1] + send_counts[-1]), -1, np.int64)
        for j in range(W):
            send[send_displs[j]:send_displs[j] + send_counts[j]] = payload(r, j, send_counts[j])
        recv = np.full(int(recv_displs[-1] + recv_counts[-1]), -7, np.int64)
        comm.all_to_all_v(send, send_counts, recv, recv_counts, send_displs, recv_displs)
        for q in range(W):
            got = recv[recv_displs[q]:recv_displs[q] + recv_counts[q]]
            assert np.array_equal(got, payload(q, r, recv_counts[q])), f"block from rank {q}, matrix {matrix}"
        holes = np.ones(len(recv), bool)
        for q in range(W):
            holes[recv_displs[q]:recv_displs[q] + recv_counts[q]] = False
        assert (recv[holes] == -7).all(), "all_to_all_v wrote outside the blocks"
        seen.append(sum(map(sum, matrix)))

    check()
    comm.barrier()
    return len(seen)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("world", [2, 3])
def test_all_to_all_v_any_counts(world, transport):
    results = run_ranks(lockstep, world, (40,), env=transport_env(transport), timeout=600)
    assert results == [results[0]] * world and results[0] == 40
