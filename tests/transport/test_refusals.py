"""Refused operations on the net channel, on the raw Endpoint API: a refused write
must fail with AccessError whatever was refused before it on the same flow (the
writer's hold rule counts the peer's refusals: reads and writes alike)."""

import pickle

import numpy as np
import pytest

from uccl.errors import AccessError
from uccl.testing import run_ranks
from uccl.transport import Endpoint

NET = {"UCCL_TRANSPORT": "net"}
REGION = 64


def refused_reads_then_writes(ctx, sequence):
    """Rank 1 offers one readable and writable region of REGION bytes; rank 0 runs
    `sequence` ("r": a read past its end, "w": a write past its end), every one of
    which must raise AccessError, then writes the whole region in bounds."""
    ep = Endpoint(ctx.bootstrap)
    if ctx.rank == 1:
        target = ep.register(np.full(REGION, 0xAB, np.uint8), "rw")
        ctx.bootstrap.broadcast(pickle.dumps(target.key), root=1)
        ctx.bootstrap.barrier()  # rank 0 is done
        landed = bytes(target.buffer)
        return {"landed_ok": landed == bytes([7]) * REGION, "refused": ep.refused_by_us(0),
                "completions": len(ep.poll())}
    key = pickle.loads(ctx.bootstrap.broadcast(None, root=1))
    src = ep.register(np.full(2 * REGION, 2, np.uint8), "")
    dst = ep.register(np.zeros(2 * REGION, np.uint8), "")
    outcomes = []
    for step, kind in enumerate(sequence):
        op = ep.read if kind == "r" else ep.write
        local = dst if kind == "r" else src
        try:
            c = op(1, local, key, length=REGION + 1).wait(timeout=30)
            outcomes.append(f"{step}:{kind} completed ok={getattr(c, 'ok', True)}")
        except AccessError as exc:
            assert "rank 0" in str(exc) and "rank 1" in str(exc) and "outside" in str(exc), str(exc)
            outcomes.append(f"{step}:{kind} AccessError")
    # the flow still works: in-bounds writes succeed (none held forever) and land
    ones = ep.register(np.full(REGION, 7, np.uint8), "")
    for _ in range(3):
        ep.write(1, ones, key).wait(timeout=30)
    ctx.bootstrap.barrier()
    return outcomes


@pytest.mark.parametrize("sequence", ["rw", "rrw", "rwrw", "wrrw"])
def test_refused_write_after_refused_read_fails(sequence):
    outcomes, target = run_ranks(refused_reads_then_writes, 2, args=(sequence,), env=NET)
    assert outcomes == [f"{i}:{k} AccessError" for i, k in enumerate(sequence)]
    assert target["landed_ok"], "only the in-bounds writes may have landed"
    assert target["refused"] == len(sequence)
    assert target["completions"] == 0, "a refused write must not reach the peer's completion queue"
