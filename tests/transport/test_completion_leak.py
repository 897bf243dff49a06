"""Completions nobody waits for do not pile up in the endpoint.

A collective returns credits (Links::release) and "done" notes with writes it never
waits for. Over the net channel each such write completes later, and its completion
used to stay in the endpoint for the life of the job: one per chunk received, 1.5 MB
per 10,000 small all_reduces. The count of completions held must stay flat however
many collectives run."""

from __future__ import annotations

import numpy as np
import pytest

from tests.collectives.transports import TRANSPORTS, transport_env
from uccl.collectives import Communicator
from uccl.testing import run_ranks

CALLS = 2000
SAMPLES = 4
# A handful of completions may be in flight at any moment (a call's last credits);
# what must not happen is one more per call.
FLAT = 16


def _many_collectives(ctx, calls):
    comm = Communicator(ctx.bootstrap)
    small = np.arange(16, dtype=np.float32)
    large = np.ones(64 << 10, np.float32)
    gathered = np.zeros(16 * ctx.world_size, np.float32)  # big enough for the window ("direct") algorithms
    held = []
    for i in range(calls):
        out = comm.all_reduce(small.copy())
        assert out[3] == 3 * ctx.world_size, f"call {i}: {out[3]}"
        if i % 50 == 0:
            comm.all_reduce(large)
            comm.all_gather(small, gathered)
        if (i + 1) % (calls // SAMPLES) == 0:
            held.append(comm.endpoint.stats()["completions_held"])
    comm.barrier()
    return held


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_completions_held_stay_flat(transport):
    results = run_ranks(_many_collectives, 2, args=(CALLS,), env=transport_env(transport), timeout=600)
    for rank, held in enumerate(results):
        assert len(held) == SAMPLES
        assert max(held) <= FLAT, f"rank {rank} over {transport}: completions held after each {CALLS // SAMPLES} " \
                                  f"calls: {held} (grows with the number of calls)"
