"""A blocking call waits for the calls issued before it (issue order), and that wait
honours the configured timeout too: behind async calls that cannot finish (a peer that
is alive but never joins), it fails on its own, saying what it waited for."""

from __future__ import annotations

import time

import numpy as np

from uccl.testing import run_ranks

TIMEOUT = 3  # seconds (UCCL_TIMEOUT)


def blocking_call_behind_stuck_async_calls(ctx):
    from uccl.collectives import Communicator
    from uccl.errors import UcclTimeoutError

    comm = Communicator(ctx.bootstrap)
    if comm.rank == 1:  # alive, but joins none of rank 0's calls
        time.sleep(6 * TIMEOUT)
        return None
    works = [comm.all_reduce(np.ones(8, np.float32), async_op=True) for _ in range(3)]
    try:
        comm.all_reduce(np.ones(8, np.float32))
    except UcclTimeoutError as exc:
        message = str(exc)
    else:
        message = "the blocking call succeeded"
    for w in works:
        try:
            w.wait(timeout=6 * TIMEOUT)
        except Exception:  # noqa: BLE001 - each stuck call fails with its own timeout
            pass
    return message


def test_blocking_call_behind_stuck_calls_says_what_it_waited_for():
    results = run_ranks(blocking_call_behind_stuck_async_calls, 2, env={"UCCL_TIMEOUT": str(TIMEOUT)}, timeout=120)
    message = results[0]
    assert message.startswith("rank 0: all_reduce:"), message
    assert "operation(s) issued before it" in message, message
