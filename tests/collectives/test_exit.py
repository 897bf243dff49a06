"""A rank whose interpreter exits while a daemon thread still waits in native code exits
cleanly. CPython ends such a thread with pthread_exit when it takes the GIL back during
shutdown; unwinding that through the wait's GIL guard used to abort the process
("terminate called without an active exception", seen once as a flaky DDP test)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tests.collectives.transports import TRANSPORTS, transport_env
from uccl.collectives import Communicator
from uccl.testing import run_ranks


class _SlowTeardown:
    """Keeps the communicator to interpreter shutdown; once shutdown has begun, asks rank 0
    to send, then lingers so that the daemon thread's wait ends in the middle of it."""

    def __init__(self, comm, store) -> None:
        self.comm, self.store = comm, store

    def __del__(self) -> None:
        self.store.set("exiting", b"1")
        time.sleep(1.5)


_KEPT = []


def _daemon_waits_at_exit(ctx):
    comm = Communicator(ctx.bootstrap)
    if ctx.rank == 1:
        req = comm.irecv(np.zeros(16, np.float32), 0)
        threading.Thread(target=req.wait, args=(30.0,), daemon=True).start()
        _KEPT.append(_SlowTeardown(comm, ctx.store))
        return "ok"
    ctx.store.get("exiting")
    comm.send(np.ones(16, np.float32), 1)
    time.sleep(2.0)
    return "ok"


def test_daemon_thread_in_wait_at_exit():
    # run_ranks fails a rank that reports and then dies (SIGABRT: exit code -6)
    assert run_ranks(_daemon_waits_at_exit, 2, env={"UCCL_TRANSPORT": "shm"}) == ["ok", "ok"]


def _gather_with_early_exit(ctx):
    """Rank 1 contributes to a gather and its process ends at once; rank 2 contributes a
    second later. Rank 1 is gone by then, but it owes nothing more: the root must still
    complete (a wait fails at once on the death of the rank it waits for, and only after
    a grace on the death of another)."""
    comm = Communicator(ctx.bootstrap)
    comm.barrier()
    mine = np.full(1000, ctx.rank + 1, np.float32)
    if ctx.rank == 2:
        time.sleep(1.5)
    out = np.zeros(3000, np.float32) if ctx.rank == 0 else None
    comm.gather(mine, out, root=0)
    if ctx.rank == 0:
        assert np.array_equal(out, np.repeat(np.arange(1, 4, dtype=np.float32), 1000))
    return "ok"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_rank_that_finished_and_exited_fails_no_one(transport):
    assert run_ranks(_gather_with_early_exit, 3, env=transport_env(transport), timeout=60) == ["ok"] * 3


def _broadcasts_then_exit(ctx):
    comm = Communicator(ctx.bootstrap)
    buf = np.full(1 << 20, ctx.rank, np.float32)
    for _ in range(3):
        comm.broadcast(buf, root=0)
    assert (buf == 0).all()
    return "ok"


def test_last_collective_before_exit_completes_everywhere():
    """A job's last collective, then exit: every rank's call completes. The root used to
    close its net endpoint with its last unwaited notes unsent, and a peer still waiting
    for them failed with "rank 0 has died" (4 runs in 6 on this machine)."""
    for _ in range(3):
        assert run_ranks(_broadcasts_then_exit, 3, env=transport_env("net"), timeout=60) == ["ok"] * 3
