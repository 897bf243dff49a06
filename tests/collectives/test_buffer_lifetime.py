"""What a caller hands to an operation stays alive until the operation is done, whether or
not the caller keeps the handle, and no longer than that.

An async collective's buffers used to live only as long as its Python Work handle, and
Endpoint.write did not keep its local buffer at all: a caller that dropped them let
native code read and write freed memory (a peer then received whatever reused it)."""

from __future__ import annotations

import gc
import pickle
import time
import weakref

import numpy as np
import pytest

from tests.collectives.transports import TRANSPORTS, transport_env
from uccl.collectives import Communicator
from uccl.testing import run_ranks
from uccl.transport import Endpoint

N = 4096  # float64: 32 KiB, below malloc's mmap threshold, so freed memory is reused at once
FILL = 7.0


def _make(kind: str, value: float):
    if kind == "torch":
        import torch

        return torch.full((N,), value, dtype=torch.float64)
    return np.full(N, value, np.float64)


def _reuse_freed_memory() -> list:
    """Allocates and fills what the allocator has free, as a busy program would."""
    gc.collect()
    return [np.full(N, FILL, np.float64) for _ in range(64)]


def _collected_soon(fin: weakref.finalize) -> bool:
    """Whether the object behind `fin` goes away (releases may wait for the interpreter's
    next turn in the main thread)."""
    for _ in range(200):
        gc.collect()
        if not fin.alive:
            return True
        time.sleep(0.01)
    return False


def _dropped_async_all_reduce(ctx, kind):
    comm = Communicator(ctx.bootstrap)
    if ctx.rank == 1:
        ctx.store.get("rank0-dropped")  # joins only once rank 0 dropped and reused its buffer
        mine = _make(kind, 1.0)
        comm.barrier()
        comm.all_reduce(mine)
        comm.barrier()
        return np.asarray(mine).tolist()
    # The barrier keeps the worker busy until rank 1 arrives, so the all_reduce queued
    # behind it runs only after its buffer was dropped here.
    ahead = comm.barrier(async_op=True)
    temp = _make(kind, 1.0)
    fin = weakref.finalize(temp, lambda: None)
    comm.all_reduce(temp, async_op=True)  # neither the buffer nor the Work is kept
    del temp
    filler = _reuse_freed_memory()
    alive_while_queued = fin.alive
    ctx.store.set("rank0-dropped", b"1")
    ahead.wait()
    comm.barrier()  # after the all_reduce: calls run in order
    intact = all(bool((f == FILL).all()) for f in filler)
    return {"alive_while_queued": alive_while_queued, "filler_intact": intact,
            "released_after": _collected_soon(fin)}


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_async_collective_keeps_dropped_buffer(transport, kind):
    r0, r1 = run_ranks(_dropped_async_all_reduce, 2, args=(kind,), env=transport_env(transport))
    assert r0["alive_while_queued"], "the buffer of a queued all_reduce was freed when its Work was dropped"
    assert r1 == [2.0] * N, f"rank 1 received other data than rank 0 passed: {sorted(set(r1))}"
    assert r0["filler_intact"], "the all_reduce wrote its result into memory reused after it was freed"
    assert r0["released_after"], "the buffer is still referenced after the all_reduce completed"


def _completed_releases(ctx):
    comm = Communicator(ctx.bootstrap)
    released = []
    for kind in ("numpy", "torch"):
        send, recv = _make(kind, 1.0), _make(kind, 0.0)
        fins = [weakref.finalize(send, lambda: None), weakref.finalize(recv, lambda: None)]
        work = comm.all_reduce(send, recv, async_op=True)
        work.wait()
        del work, send, recv
        released.append(all(_collected_soon(f) for f in fins))
        send = _make(kind, 1.0)
        fin = weakref.finalize(send, lambda: None)
        comm.all_reduce(send)  # blocking
        del send
        released.append(_collected_soon(fin))
    return released


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_completed_collective_holds_no_buffer(transport):
    """Once a collective completed, nothing of uccl's keeps its buffers (no leak)."""
    assert run_ranks(_completed_releases, 2, env=transport_env(transport)) == [[True] * 4] * 2


def _dropped_write(ctx):
    ep = Endpoint(ctx.bootstrap)
    inbox = ep.register(np.zeros(N, np.float64), "w")
    keys = [pickle.loads(b) for b in ctx.bootstrap.allgather(pickle.dumps(inbox.key))]
    if ctx.rank == 1:
        c = ep.wait_remote_write(0, timeout=60)
        ctx.bootstrap.barrier()
        return {"imm": c.imm, "data": sorted(set(inbox.buffer.tolist()))}
    temp = np.full(N, 5.0)
    fin = weakref.finalize(temp, lambda: None)
    req = ep.write(1, ep.register(temp, ""), keys[1], imm=9)  # the region is not kept either
    synchronous = req._done
    del temp, req
    filler = _reuse_freed_memory()
    # Over the net the write completes when this endpoint next makes progress; until
    # then it may still read the buffer. Over shm it finished before returning.
    alive_until_done = synchronous or fin.alive
    ctx.bootstrap.barrier()
    for _ in range(1000):  # takes in the write's completion
        ep.poll()
        if ep.stats()["operations_in_flight"] == 0:
            break
        time.sleep(0.01)
    del filler
    return {"alive_until_done": alive_until_done, "released_after": _collected_soon(fin),
            "held": ep.stats()["completions_held"]}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_write_keeps_dropped_buffer(transport):
    r0, r1 = run_ranks(_dropped_write, 2, env=transport_env(transport))
    assert r0["alive_until_done"], "the local buffer of a write in flight was freed when the caller dropped it"
    assert r1 == {"imm": 9, "data": [5.0]}
    assert r0["released_after"], "the write's buffer is still referenced after it completed"
    assert r0["held"] == 0, "the completion of a dropped request stays in the endpoint"
