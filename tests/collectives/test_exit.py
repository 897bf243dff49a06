"""A rank whose interpreter exits while a daemon thread still waits in native code exits
cleanly. CPython ends such a thread with pthread_exit when it takes the GIL back during
shutdown; unwinding that through the wait's GIL guard used to abort the process
("terminate called without an active exception", seen once as a flaky DDP test)."""

from __future__ import annotations

import threading
import time

import numpy as np

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
