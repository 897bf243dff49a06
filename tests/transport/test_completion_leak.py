"""Completions nobody waits for do not pile up in the endpoint, and their failures are
still reported.

A collective returns credits (Links::release) and "done" notes with writes it never
waits for. Over the net channel each such write completes later, and its completion
used to stay in the endpoint for the life of the job: one per chunk received, 1.5 MB
per 10,000 small all_reduces. The count of completions held must stay flat however
many collectives run."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from tests.collectives.transports import TRANSPORTS, transport_env
from uccl.collectives import Communicator
from uccl.errors import AccessError, UcclTimeoutError
from uccl.testing import run_ranks
from uccl.transport import Endpoint

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


def _dropped_refused_write(ctx):
    """Rank 0 writes past the end of rank 1's region and drops the request: the refusal
    (which the net channel learns after the fact) is raised by its next wait on rank 1."""
    ep = Endpoint(ctx.bootstrap)
    if ctx.rank == 1:
        target = ep.register(np.zeros(64, np.uint8), "w")
        ctx.bootstrap.broadcast(pickle.dumps(target.key), root=1)
        ctx.bootstrap.barrier()
        return "target"
    key = pickle.loads(ctx.bootstrap.broadcast(None, root=1))
    ep.write(1, ep.register(np.ones(128, np.uint8), ""), key)  # dropped: fire and forget
    try:
        ep.wait_remote_write(1, timeout=30)  # rank 1 never writes: only the refusal can end this
        outcome = "the wait ended without an error"
    except AccessError as exc:
        outcome = str(exc)
    except UcclTimeoutError:
        outcome = "timed out: the refusal of the dropped write was never reported"
    held = ep.stats()["completions_held"]
    ctx.bootstrap.barrier()
    return {"outcome": outcome, "held": held}


def test_failure_of_dropped_request_is_reported():
    r0, _ = run_ranks(_dropped_refused_write, 2, env={"UCCL_TRANSPORT": "net"})
    assert "rank 0" in r0["outcome"] and "rank 1" in r0["outcome"] and "outside" in r0["outcome"], r0["outcome"]
    assert "nobody waited for" in r0["outcome"], r0["outcome"]
    assert r0["held"] == 0
