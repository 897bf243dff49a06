"""run_ranks: a function on N local ranks (separate processes), and what each returns.

The parent hosts the bootstrap store, so no port is ever raced for; a rank that raises
or hangs fails the whole run with every rank's report.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Optional

from uccl.transport.bootstrap import StoreBootstrap
from uccl.transport.store import TCPStore


@dataclass
class RankContext:
    rank: int
    world_size: int
    bootstrap: StoreBootstrap
    store: TCPStore


class RankFailure(AssertionError):
    pass


def _child(fn, rank, world, host, port, env, args, results, store_timeout):
    os.environ.update(env)
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": host, "MASTER_PORT": str(port)})
    try:
        store = TCPStore(host, port, world, is_master=False, timeout=store_timeout)
        ctx = RankContext(rank, world, StoreBootstrap(store, rank, world), store)
        results.put((rank, True, fn(ctx, *args)))
    except BaseException as exc:  # report everything, including assertion failures
        results.put((rank, False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


def run_ranks(fn: Callable[..., Any], world_size: int, args: tuple = (), env: Optional[dict] = None,
              timeout: float = 120.0, store_timeout: float = 60.0, may_die: tuple = ()) -> list:
    """Runs fn(ctx, *args) on `world_size` processes; returns their results by rank.
    Ranks in `may_die` are allowed to exit without reporting (their result is None)."""
    ctx = mp.get_context("spawn")
    store = TCPStore("127.0.0.1", 0, world_size, is_master=True, timeout=store_timeout)
    results = ctx.Queue()
    env = {k: str(v) for k, v in (env or {}).items()}
    procs = [ctx.Process(target=_child, args=(fn, r, world_size, "127.0.0.1", store.port, env, args, results,
                                              store_timeout), daemon=True)
             for r in range(world_size)]
    try:
        for p in procs:
            p.start()
        out: dict[int, tuple[bool, Any]] = {}
        import time

        deadline = time.monotonic() + timeout
        expected = world_size - len(may_die)
        while len([r for r in out if r not in may_die]) < expected:
            try:
                rank, ok, value = results.get(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
                out[rank] = (ok, value)
            except queue.Empty:
                if time.monotonic() > deadline:
                    break
                dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0) and r not in out]
                if dead and all(p.exitcode is not None for p in procs):
                    break
        failures = [f"rank {r}: {v}" for r, (ok, v) in sorted(out.items()) if not ok]
        missing = [r for r in range(world_size) if r not in out and r not in may_die]
        if missing:
            failures.append(f"ranks {missing} did not report (exit codes "
                            f"{[procs[r].exitcode for r in missing]}; limit {timeout:.0f} s)")
        for r, p in enumerate(procs):  # a crash at interpreter exit, after reporting, fails too
            if r in out and r not in may_die:
                p.join(timeout=30)
                if p.exitcode not in (0, None):
                    failures.append(f"rank {r}: reported, then exited with code {p.exitcode}")
        if failures:
            raise RankFailure("\n".join(failures))
        return [out[r][1] if r in out else None for r in range(world_size)]
    finally:
        for p in procs:
            if p.pid is None:
                continue
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
        store.close()
