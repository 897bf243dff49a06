"""Failures surface as exceptions, never hangs: a rank that dies makes every other rank
raise within the group's timeout; a call that does not match across ranks raises."""

from __future__ import annotations

import os
import time

import pytest
import torch

from tests.distributed.harness import TRANSPORTS, init_url, transport_env
from uccl.testing import run_ranks

TIMEOUT = 8.0


def _init(ctx, url):
    import datetime

    import torch.distributed as dist

    dist.init_process_group("uccl", init_method=url, rank=ctx.rank, world_size=ctx.world_size,
                            timeout=datetime.timedelta(seconds=TIMEOUT))
    return dist


def _dies(ctx, url, when):
    dist = _init(ctx, url)
    t = torch.ones(1 << 16)
    dist.all_reduce(t)  # everybody is connected
    if ctx.rank == ctx.world_size - 1:
        os._exit(3)
    start = time.monotonic()
    try:
        for _ in range(3):
            if when == "collective":
                dist.all_reduce(t)
            else:
                dist.recv(t, src=ctx.world_size - 1)
    except RuntimeError as exc:
        return time.monotonic() - start, type(exc).__name__, str(exc)[:200]
    return None


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("when", ["collective", "recv"])
def test_dead_rank_makes_the_others_raise(transport, when):
    env = transport_env(transport)
    world = 3
    res = run_ranks(_dies, world, args=(init_url(), when), env=env, may_die=(world - 1,), timeout=120)
    for r in range(world - 1):
        assert res[r] is not None, f"rank {r} did not raise"
        elapsed, kind, msg = res[r]
        assert elapsed < TIMEOUT + 10, f"rank {r} raised after {elapsed:.1f} s (timeout {TIMEOUT} s): {msg}"


def _mismatch(ctx, url, case):
    dist = _init(ctx, url)
    r = ctx.rank
    start = time.monotonic()
    try:
        if case == "shape":
            dist.all_reduce(torch.ones(4 if r == 0 else 8))
        elif case == "dtype":
            dist.all_reduce(torch.ones(4, dtype=torch.float32 if r == 0 else torch.float64))
        elif case == "root":
            dist.broadcast(torch.ones(4), src=r)
        dist.barrier()
    except RuntimeError as exc:
        return time.monotonic() - start, type(exc).__name__, str(exc)[:300]
    return None


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", ["shape", "dtype", "root"])
def test_mismatched_calls_raise(transport, case):
    env = transport_env(transport)
    res = run_ranks(_mismatch, 2, args=(init_url(), case), env=env, timeout=120)
    op = "broadcast" if case == "root" else "all_reduce"
    for r, out in enumerate(res):
        assert out is not None, f"rank {r}: {case} mismatch went unnoticed"
        elapsed, kind, msg = out
        # Found as a mismatch (not a timeout, not some other failure), on this rank's call.
        assert kind == "MismatchError", f"rank {r}: {case} mismatch raised {kind}: {msg}"
        assert msg.startswith(f"rank {r}: {op}(") and "different" in msg, f"rank {r}: {msg}"
        assert elapsed < TIMEOUT + 10, out


def _late_collective(ctx, url):
    dist = _init(ctx, url)
    if ctx.rank == 0:
        start = time.monotonic()
        try:
            dist.all_reduce(torch.ones(4))  # rank 1 never joins
        except RuntimeError as exc:
            elapsed = time.monotonic() - start
            return elapsed, type(exc).__name__, str(exc)[:300]
        return None
    time.sleep(TIMEOUT + 6)
    return "slept"


def test_collective_timeout_is_honoured():
    res = run_ranks(_late_collective, 2, args=(init_url(),), env=transport_env("shm"), timeout=120)
    assert res[0] is not None, "all_reduce with a missing peer never raised"
    elapsed, kind, msg = res[0]
    assert kind == "UcclTimeoutError" and "all_reduce" in msg, res[0]
    assert TIMEOUT - 1 <= elapsed < TIMEOUT + 10, res[0]


def _late_init(ctx, url):
    """Rank 1 never joins the group: rank 0's init_process_group gives up after the
    timeout it was given, naming the rank it waited for."""
    if ctx.rank == 1:
        time.sleep(TIMEOUT + 6)
        return "never joined"
    start = time.monotonic()
    try:
        _init(ctx, url)
    except Exception as exc:
        return time.monotonic() - start, type(exc).__name__, str(exc)[:300]
    return None


def test_init_timeout_is_honoured():
    res = run_ranks(_late_init, 2, args=(init_url(),), env=transport_env("shm"), timeout=120)
    assert res[0] is not None, "init_process_group completed without rank 1"
    elapsed, kind, msg = res[0]
    assert kind == "UcclTimeoutError" and "rank 1" in msg, f"init's error does not name the missing rank: {kind}: {msg}"
    assert TIMEOUT - 1 <= elapsed < TIMEOUT + 10, f"init gave up after {elapsed:.1f} s, timeout {TIMEOUT} s: {msg}"


def _monitored(ctx, url):
    import datetime

    dist = _init(ctx, url)
    if ctx.rank == 1:
        time.sleep(4)
        return "late"
    try:
        dist.monitored_barrier(timeout=datetime.timedelta(seconds=1), wait_all_ranks=True)
    except RuntimeError as exc:
        return str(exc)
    return None


def test_monitored_barrier_names_the_missing_rank():
    res = run_ranks(_monitored, 3, args=(init_url(),), env=transport_env("shm"), timeout=120)
    assert res[0] == "[Rank 0]: Rank 1 failed to pass monitoredBarrier in 1000 ms", res
    assert res[2] is not None and "Rank 0" in res[2], res  # rank 0 never released it
