"""Several communicators and process groups used from several Python threads at once,
async operations interleaved with blocking ones, and groups torn down while operations
are outstanding: every result matches a numpy/torch reference, or the operation raises
a clear error; nothing crashes or hangs (every wait is bounded; run_ranks bounds each
rank, so a hang fails the test naming the rank instead of stalling the suite).

Runs over shared memory (world 3) and the net channel (UDP over loopback, world 2).
scripts/tsan.sh runs this file against a ThreadSanitizer build of uccl._native."""

from __future__ import annotations

import datetime
import gc
import os
import threading

import numpy as np
import pytest

from uccl.testing import run_ranks

THREADS = 3
ROUNDS = int(os.environ.get("UCCL_CONCURRENCY_ROUNDS", "8"))
JOIN_S = 120.0  # per thread: far above the milliseconds each round takes
RUN_S = 420.0  # per test, all ranks
CASES = [pytest.param("shm", 3, id="shm-world3"), pytest.param("net", 2, id="net-world2")]


def _env(transport: str, timeout_s: float = 60.0) -> dict:
    return {"UCCL_TRANSPORT": transport, "UCCL_TIMEOUT": str(timeout_s), "OMP_NUM_THREADS": "1"}


def _run_threads(rank: int, bodies: dict) -> None:
    """Runs each body(name) in its own thread at once; re-raises the first failure naming
    the thread, and fails if one is still running after JOIN_S."""
    errors: dict = {}
    start = threading.Barrier(len(bodies))

    def wrap(name, body):
        try:
            start.wait(JOIN_S)
            body(name)
        except BaseException as exc:  # every failure is reported, assertion or not
            errors[name] = exc

    threads = [threading.Thread(target=wrap, args=(n, b), name=n, daemon=True) for n, b in bodies.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_S)
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"rank {rank}: threads {stuck} still running after {JOIN_S:.0f} s"
    for name, exc in errors.items():
        raise AssertionError(f"rank {rank}: thread {name}: {type(exc).__name__}: {exc}") from exc


def _inputs(rank: int, tid: int, rnd: int, n: int) -> np.ndarray:
    """Integers in float64 (sums are exact), distinct per rank, thread and round."""
    return np.random.default_rng((rank * 131 + tid) * 1009 + rnd).integers(-50, 50, n).astype(np.float64)


# -- uccl.collectives.Communicator ---------------------------------------------------------


def _communicator(ctx, name: str):
    """A communicator of its own (own endpoint, own key space in the shared store)."""
    from uccl.collectives import Communicator
    from uccl.transport.bootstrap import StoreBootstrap

    return Communicator(StoreBootstrap(ctx.store, ctx.rank, ctx.world_size, prefix=f"uccl/{name}"))


def _comm_rounds(comm, rank: int, W: int, tid: int, label: str) -> None:
    """Blocking collectives, checked against numpy, ROUNDS times with varying sizes."""
    for rnd in range(ROUNDS):
        n = [1, 1000, 70_000][rnd % 3] + tid
        ins = [_inputs(q, tid, rnd, n) for q in range(W)]
        buf = ins[rank].copy()
        comm.all_reduce(buf)
        np.testing.assert_array_equal(buf, np.sum(ins, axis=0), err_msg=f"{label} round {rnd}: all_reduce")
        out = np.zeros(n * W)
        comm.all_gather(ins[rank], out)
        np.testing.assert_array_equal(out, np.concatenate(ins), err_msg=f"{label} round {rnd}: all_gather")
        root = rnd % W
        buf = ins[rank].copy()
        comm.broadcast(buf, root=root)
        np.testing.assert_array_equal(buf, ins[root], err_msg=f"{label} round {rnd}: broadcast")
        big = [_inputs(q, tid, rnd + 1000, n * W) for q in range(W)]
        out = np.zeros(n)
        comm.reduce_scatter(big[rank], out)
        np.testing.assert_array_equal(out, np.sum(big, axis=0)[rank * n:(rank + 1) * n],
                                      err_msg=f"{label} round {rnd}: reduce_scatter")


def _communicators_from_threads(ctx):
    comms = [_communicator(ctx, f"threads{t}") for t in range(THREADS)]
    _run_threads(ctx.rank, {f"comm{t}": (lambda name, t=t: _comm_rounds(comms[t], ctx.rank, ctx.world_size, t,
                                                                       f"rank {ctx.rank} {name}"))
                            for t in range(THREADS)})
    return True


@pytest.mark.parametrize("transport,world", CASES)
def test_communicators_used_from_threads_at_once(transport, world):
    assert run_ranks(_communicators_from_threads, world, env=_env(transport), timeout=RUN_S) == [True] * world


def _comm_async_interleaved(ctx):
    """On one communicator: async calls left in flight while blocking calls run, then
    waited in another order than issued; every result checked."""
    comm = _communicator(ctx, "interleaved")
    r, W = ctx.rank, ctx.world_size
    for rnd in range(ROUNDS):
        n = 5000 + rnd
        ins = [_inputs(q, 0, rnd, n) for q in range(W)]
        a1 = ins[r].copy()
        w1 = comm.all_reduce(a1, async_op=True)
        blocking = ins[r].copy()
        comm.all_reduce(blocking)
        gathered = np.zeros(n * W)
        w2 = comm.all_gather(ins[r], gathered, async_op=True)
        root = rnd % W
        b = ins[r].copy()
        comm.broadcast(b, root=root)
        a3 = ins[r] * 2
        w3 = comm.all_reduce(a3, async_op=True)
        for w in (w3, w1, w2):
            w.wait(60.0)
        np.testing.assert_array_equal(blocking, np.sum(ins, axis=0), err_msg=f"round {rnd}: blocking all_reduce")
        np.testing.assert_array_equal(b, ins[root], err_msg=f"round {rnd}: blocking broadcast")
        np.testing.assert_array_equal(a1, np.sum(ins, axis=0), err_msg=f"round {rnd}: async all_reduce 1")
        np.testing.assert_array_equal(gathered, np.concatenate(ins), err_msg=f"round {rnd}: async all_gather")
        np.testing.assert_array_equal(a3, 2 * np.sum(ins, axis=0), err_msg=f"round {rnd}: async all_reduce 3")
    return True


@pytest.mark.parametrize("transport,world", CASES)
def test_communicator_async_interleaved_with_blocking(transport, world):
    assert run_ranks(_comm_async_interleaved, world, env=_env(transport), timeout=RUN_S) == [True] * world


def _outcome_of(work, want: np.ndarray, got: np.ndarray, label: str):
    """'ok' when the work completed with the right result, or the error it raised; a
    wrong result is a failure."""
    try:
        work.wait(30.0)
    except Exception as exc:  # an error is allowed; it must say what failed
        assert str(exc), f"{label}: {type(exc).__name__} without a message"
        return f"{type(exc).__name__}: {exc}"
    np.testing.assert_array_equal(got, want, err_msg=f"{label}: completed with a wrong result")
    return "ok"


def _comm_dropped_with_outstanding(ctx):
    """Async calls in flight when the caller drops its communicator (and endpoint) and
    collects garbage: each Work still completes correctly or raises a clear error, and a
    new communicator works in the same process afterwards."""
    r, W = ctx.rank, ctx.world_size
    comm = _communicator(ctx, "dropped")
    n = 200_000
    ins = [_inputs(q, 7, 0, n) for q in range(W)]
    bufs = [ins[r] * (i + 1) for i in range(4)]
    works = [comm.all_reduce(b, async_op=True) for b in bufs]
    comm.endpoint.close()
    del comm
    gc.collect()
    outcomes = [_outcome_of(w, np.sum(ins, axis=0) * (i + 1), bufs[i], f"rank {r}: async all_reduce {i}")
                for i, w in enumerate(works)]
    del works
    gc.collect()
    fresh = _communicator(ctx, "after-drop")
    buf = ins[r].copy()
    fresh.all_reduce(buf)
    np.testing.assert_array_equal(buf, np.sum(ins, axis=0), err_msg=f"rank {r}: all_reduce on a new communicator")
    return outcomes


@pytest.mark.parametrize("transport,world", CASES)
def test_communicator_dropped_with_operations_outstanding(transport, world):
    outcomes = run_ranks(_comm_dropped_with_outstanding, world, env=_env(transport), timeout=RUN_S)
    assert all(len(o) == 4 for o in outcomes)


# -- torch.distributed process groups (backend "uccl") -------------------------------------


def _init_torch(ctx, url: str, timeout_s: float = 60.0):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("uccl", init_method=url, rank=ctx.rank, world_size=ctx.world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    return dist


def _torch_inputs(rank: int, tid: int, rnd: int, n: int):
    import torch

    return torch.from_numpy(_inputs(rank, tid, rnd, n)).to(torch.float32)


def _group_rounds(dist, group, rank: int, W: int, tid: int, label: str) -> None:
    import torch

    for rnd in range(ROUNDS):
        n = [3, 4096, 50_000][rnd % 3] + tid
        ins = [_torch_inputs(q, tid, rnd, n) for q in range(W)]
        t = ins[rank].clone()
        dist.all_reduce(t, group=group)
        torch.testing.assert_close(t, torch.stack(ins).sum(0), rtol=0, atol=0,
                                   msg=lambda m: f"{label} round {rnd}: all_reduce: {m}")
        outs = [torch.empty(n) for _ in range(W)]
        dist.all_gather(outs, ins[rank], group=group)
        for q in range(W):
            assert torch.equal(outs[q], ins[q]), f"{label} round {rnd}: all_gather block {q}"
        root = rnd % W
        t = ins[rank].clone()
        dist.broadcast(t, src=root, group=group)
        assert torch.equal(t, ins[root]), f"{label} round {rnd}: broadcast from {root}"
        works = [dist.all_reduce(x, group=group, async_op=True) for x in (ins[rank].clone(), ins[rank] * 3)]
        for w in works:
            w.wait(datetime.timedelta(seconds=60))


def _groups_from_threads(ctx, url):
    dist = _init_torch(ctx, url)
    groups = [dist.new_group(backend="uccl") for _ in range(THREADS)]  # same order on every rank
    _run_threads(ctx.rank, {f"group{t}": (lambda name, t=t: _group_rounds(dist, groups[t], ctx.rank,
                                                                        ctx.world_size, t,
                                                                        f"rank {ctx.rank} {name}"))
                            for t in range(THREADS)})
    dist.destroy_process_group()
    return True


def _url() -> str:
    import tempfile
    import uuid

    return "file://" + os.path.join(tempfile.gettempdir(), f"uccl-conc-{uuid.uuid4().hex}")


@pytest.mark.parametrize("transport,world", CASES)
def test_process_groups_used_from_threads_at_once(transport, world):
    assert run_ranks(_groups_from_threads, world, args=(_url(),), env=_env(transport),
                     timeout=RUN_S) == [True] * world


def _torch_async_interleaved(ctx, url):
    import torch

    dist = _init_torch(ctx, url)
    r, W = ctx.rank, ctx.world_size
    for rnd in range(ROUNDS):
        n = 3000 + rnd
        ins = [_torch_inputs(q, 0, rnd, n) for q in range(W)]
        total = torch.stack(ins).sum(0)
        a1 = ins[r].clone()
        w1 = dist.all_reduce(a1, async_op=True)
        blocking = ins[r].clone()
        dist.all_reduce(blocking)
        outs = [torch.empty(n) for _ in range(W)]
        w2 = dist.all_gather(outs, ins[r], async_op=True)
        root = rnd % W
        b = ins[r].clone()
        dist.broadcast(b, src=root)
        a3 = ins[r] * 2
        w3 = dist.all_reduce(a3, async_op=True)
        for w in (w3, w1, w2):
            w.wait(datetime.timedelta(seconds=60))
        assert torch.equal(blocking, total), f"rank {r} round {rnd}: blocking all_reduce"
        assert torch.equal(b, ins[root]), f"rank {r} round {rnd}: blocking broadcast"
        assert torch.equal(a1, total), f"rank {r} round {rnd}: async all_reduce 1"
        assert all(torch.equal(outs[q], ins[q]) for q in range(W)), f"rank {r} round {rnd}: async all_gather"
        assert torch.equal(a3, 2 * total), f"rank {r} round {rnd}: async all_reduce 3"
    dist.destroy_process_group()
    return True


@pytest.mark.parametrize("transport,world", CASES)
def test_process_group_async_interleaved_with_blocking(transport, world):
    assert run_ranks(_torch_async_interleaved, world, args=(_url(),), env=_env(transport),
                     timeout=RUN_S) == [True] * world


def _group_destroyed_with_outstanding(ctx, url):
    """Async all_reduces in flight on a subgroup when it is destroyed: each completes with
    the right result or raises an error with a message; the default group and a new group
    work afterwards."""
    import torch

    dist = _init_torch(ctx, url, timeout_s=30.0)
    r, W = ctx.rank, ctx.world_size
    g = dist.new_group(backend="uccl")
    n = 100_000
    ins = [_torch_inputs(q, 9, 0, n) for q in range(W)]
    bufs = [ins[r] * (i + 1) for i in range(4)]
    works = [dist.all_reduce(b, group=g, async_op=True) for b in bufs]
    dist.destroy_process_group(g)
    outcomes = []
    total = torch.stack(ins).sum(0)
    for i, w in enumerate(works):
        try:
            w.wait(datetime.timedelta(seconds=30))
        except Exception as exc:  # an error is allowed; it must say what failed
            assert str(exc), f"rank {r}: async all_reduce {i}: {type(exc).__name__} without a message"
            outcomes.append(f"{type(exc).__name__}: {exc}")
            continue
        assert torch.equal(bufs[i], total * (i + 1)), f"rank {r}: async all_reduce {i} completed with a wrong result"
        outcomes.append("ok")
    del works, g
    gc.collect()
    again = dist.new_group(backend="uccl")
    for group in (None, again):
        t = ins[r].clone()
        dist.all_reduce(t, group=group)
        assert torch.equal(t, total), f"rank {r}: all_reduce after the destroy ({'new group' if group else 'world'})"
    dist.destroy_process_group()
    return outcomes


@pytest.mark.parametrize("transport,world", CASES)
def test_process_group_destroyed_with_operations_outstanding(transport, world):
    outcomes = run_ranks(_group_destroyed_with_outstanding, world, args=(_url(),), env=_env(transport, 30.0),
                         timeout=RUN_S)
    assert all(len(o) == 4 for o in outcomes)


def _group_destroyed_under_a_thread(ctx, url):
    """One thread runs blocking all_reduces on a subgroup while the main thread destroys
    it: the thread's calls return correct results or raise an error with a message, and
    the thread ends (no hang, no crash)."""
    import torch

    dist = _init_torch(ctx, url, timeout_s=20.0)
    r, W = ctx.rank, ctx.world_size
    g = dist.new_group(backend="uccl")
    started = threading.Event()
    seen: dict = {"ok": 0, "error": None}

    def worker(name):
        for rnd in range(10_000):
            ins = [_torch_inputs(q, 5, rnd, 2048) for q in range(W)]
            t = ins[r].clone()
            try:
                dist.all_reduce(t, group=g)
            except Exception as exc:  # the group went away under this thread
                assert str(exc), f"{name}: {type(exc).__name__} without a message"
                seen["error"] = f"{type(exc).__name__}: {exc}"
                return
            finally:
                started.set()
            assert torch.equal(t, torch.stack(ins).sum(0)), f"{name} round {rnd}: wrong all_reduce result"
            seen["ok"] += 1

    def destroyer(name):
        assert started.wait(JOIN_S), f"{name}: the worker never started"
        dist.destroy_process_group(g)

    _run_threads(r, {"worker": worker, "destroyer": destroyer})
    t = _torch_inputs(r, 5, 0, 64)
    dist.all_reduce(t)
    assert torch.equal(t, torch.stack([_torch_inputs(q, 5, 0, 64) for q in range(W)]).sum(0))
    dist.destroy_process_group()
    return seen


@pytest.mark.parametrize("transport,world", CASES)
def test_process_group_destroyed_while_a_thread_uses_it(transport, world):
    seen = run_ranks(_group_destroyed_under_a_thread, world, args=(_url(),), env=_env(transport, 20.0),
                     timeout=RUN_S)
    assert all(s["error"] or s["ok"] == 10_000 for s in seen), seen
