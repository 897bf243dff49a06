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
    for r, out in enumerate(res):
        assert out is not None, f"rank {r}: {case} mismatch went unnoticed"
        assert out[0] < TIMEOUT + 10, out


def _timeout(ctx, url):
    dist = _init(ctx, url)
    if ctx.rank == 0:
        start = time.monotonic()
        try:
            dist.all_reduce(torch.ones(4))  # rank 1 never joins
        except RuntimeError as exc:
            elapsed = time.monotonic() - start
            dist.monitored_barrier  # noqa: B018 - still there
            return elapsed, str(exc)[:200]
        return None
    time.sleep(TIMEOUT + 6)
    return "slept"


def test_init_timeout_is_honoured():
    res = run_ranks(_timeout, 2, args=(init_url(),), env=transport_env("shm"), timeout=120)
    assert res[0] is not None, "all_reduce with a missing peer never raised"
    assert TIMEOUT - 1 <= res[0][0] < TIMEOUT + 10, res[0]


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
