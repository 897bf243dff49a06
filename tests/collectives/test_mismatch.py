"""Ranks that disagree about a call get a clear error on every rank, never a hang."""

from __future__ import annotations

import time

import numpy as np
import pytest

from uccl.testing import run_ranks

TIMEOUT = "20"  # seconds: every failure below must come well before this
ROOTED = ("root", "gather_root", "scatter_root")


def disagree(ctx, case):
    from uccl.collectives import Communicator
    from uccl.errors import MismatchError, UcclError

    comm = Communicator(ctx.bootstrap)
    r = comm.rank
    odd = r == ctx.world_size - 1  # the last rank calls differently
    start = time.monotonic()
    try:
        if case == "size":
            comm.all_reduce(np.ones(20 if odd else 10, np.float32))
        elif case == "big_size":
            comm.all_reduce(np.ones((3 << 20) if odd else (2 << 20), np.float32))
        elif case == "dtype":
            comm.all_reduce(np.ones(10, np.int32 if odd else np.float32))
        elif case == "op":
            comm.all_reduce(np.ones(10, np.float32), op="max" if odd else "sum")
        elif case == "root":
            comm.broadcast(np.ones(10, np.float32), root=1 if odd else 0)
        elif case == "gather_root":
            W = ctx.world_size
            comm.gather(np.ones(10, np.float32), np.zeros(10 * W, np.float32), root=r if odd else 0)
        elif case == "scatter_root":
            W = ctx.world_size
            comm.scatter(np.ones(10 * W, np.float32), np.zeros(10, np.float32), root=r if odd else 0)
        elif case == "collective":
            if odd:
                comm.all_gather(np.ones(10, np.float32), np.zeros(10 * ctx.world_size, np.float32))
            else:
                comm.all_reduce(np.ones(10, np.float32))
        elif case == "all_to_all_v":
            W = ctx.world_size
            send = [1] * W
            recv = [2 if (odd and q == 0) else 1 for q in range(W)]
            comm.all_to_all_v(np.ones(W, np.float32), send, np.zeros(sum(recv), np.float32), recv)
        elif case == "all_to_all_v_eager_vs_window":
            # rank 0 sends a few elements (one eager message); the last rank expects a
            # large block (through its window): each would wait for the other's way
            W = ctx.world_size
            send = [3] * W
            recv = [70000 if (odd and q == 0) else 3 for q in range(W)]
            comm.all_to_all_v(np.ones(3 * W, np.float32), send, np.zeros(sum(recv), np.float32), recv)
        if case in ROOTED:
            # A rank that heard only from the true root got what it expected and may
            # return; the disagreement must stop its very next call.
            comm.barrier()
        return ("no error", None)
    except MismatchError as exc:
        elapsed = time.monotonic() - start
        # The communicator refuses further use with the same reason.
        try:
            comm.barrier()
            after = "usable"
        except UcclError as again:
            after = str(again)
        return ("MismatchError", str(exc), elapsed, after)
    except UcclError as exc:
        return (type(exc).__name__, str(exc), time.monotonic() - start, None)
    finally:
        ctx.bootstrap.barrier()  # keep every communicator alive until all ranks have reported


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("case", ["size", "big_size", "dtype", "op", "root", "gather_root", "scatter_root",
                                  "collective"])
def test_mismatched_calls_fail_on_every_rank(case, world):
    results = run_ranks(disagree, world, (case,), env={"UCCL_TIMEOUT": TIMEOUT}, timeout=120)
    for rank, res in enumerate(results):
        assert res[0] == "MismatchError", f"rank {rank}: {res}"
        kind, msg, elapsed, after = res
        assert f"rank {rank}" in msg, msg
        assert elapsed < 10, f"rank {rank} took {elapsed:.1f} s"
        assert "cannot be used" in after or "aborted" in after or "rank" in after


@pytest.mark.parametrize("case", ["all_to_all_v", "all_to_all_v_eager_vs_window"])
def test_all_to_all_v_count_disagreement(case):
    results = run_ranks(disagree, 2, (case,), env={"UCCL_TIMEOUT": TIMEOUT}, timeout=120)
    for rank, res in enumerate(results):
        assert res[0] == "MismatchError", f"rank {rank}: {res}"
    assert any("sizes" in res[1] for res in results)


def dead_peer(ctx):
    import os

    from uccl.collectives import Communicator
    from uccl.errors import PeerFailureError

    comm = Communicator(ctx.bootstrap)
    comm.all_reduce(np.ones(4, np.float32))
    if comm.rank == 1:
        os._exit(0)
    start = time.monotonic()
    with pytest.raises(PeerFailureError) as info:
        comm.all_reduce(np.ones(1 << 20, np.float32))
    return str(info.value), time.monotonic() - start


def test_dead_peer_fails_the_collective_quickly():
    results = run_ranks(dead_peer, 3, env={"UCCL_TIMEOUT": "30"}, may_die=(1,), timeout=120)
    for rank in (0, 2):
        msg, elapsed = results[rank]
        assert "all_reduce" in msg and "rank 1" in msg and ("died" in msg or "exited" in msg), msg
        assert elapsed < 25, (rank, msg, elapsed)
