"""Failure injection: a rank SIGKILLed at a random point of a random collective.

Every survivor must raise an error naming the dead rank within the group's timeout, give
back what the group held (threads, file descriptors) once the group is destroyed, and be
able to form a new group of the survivors only, in the same process, that works. Nothing
may be left in /dev/shm or in network namespaces. Each seed picks the victim, the world,
the collectives run before the fatal one, the fatal one's size and the delay into it.
"""

from __future__ import annotations

import datetime
import gc
import os
import random
import signal
import tempfile
import threading
import time
import uuid

import pytest
import torch

from tests.distributed.harness import transport_env
from uccl.testing import run_ranks

TIMEOUT = 10.0  # the groups' timeout: every survivor must have raised by then
SLACK = 8.0     # start-up of the wait and a loaded machine
SEEDS = (11, 23, 37)
OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "barrier")


def _plan(seed: int) -> dict:
    rng = random.Random(seed)
    world = rng.randint(2, 4)
    return {"world": world, "victim": rng.randrange(world), "before": rng.randrange(0, 5),
            "ops": [(rng.choice(OPS), rng.choice([1, 777, 1 << 14, 100_003, 1 << 20])) for _ in range(40)],
            "delay_s": rng.choice([0.0, rng.uniform(0, 0.002), rng.uniform(0.002, 0.05)])}


def _collective(dist, op: str, n: int, world: int) -> None:
    x = torch.ones(n * world)
    if op == "all_reduce":
        dist.all_reduce(x)
    elif op == "all_gather":
        dist.all_gather_into_tensor(torch.empty(n * world), torch.ones(n))
    elif op == "reduce_scatter":
        dist.reduce_scatter_tensor(torch.empty(n), x)
    elif op == "all_to_all":
        dist.all_to_all_single(torch.empty(n * world), x)
    elif op == "broadcast":
        dist.broadcast(x, src=0)
    else:
        dist.barrier()


def _resources() -> dict:
    return {"threads": sorted(t.name for t in threading.enumerate()), "nthreads": len(os.listdir("/proc/self/task")),
            "fds": sorted(os.listdir("/proc/self/fd"))}


def _settled(baseline: dict, limit_s: float = 10.0) -> dict:
    """Resources once the destroyed group's threads have stopped (bounded wait)."""
    end = time.monotonic() + limit_s
    while True:
        gc.collect()
        now = _resources()
        if (now["nthreads"] <= baseline["nthreads"] and len(now["fds"]) <= len(baseline["fds"])) \
                or time.monotonic() > end:
            return now
        time.sleep(0.2)


def _kill_run(ctx, urls: tuple, seed: int, death_file: str):
    import torch.distributed as dist

    p = _plan(seed)
    torch.set_num_threads(1)
    baseline = _resources()
    dist.init_process_group("uccl", init_method=urls[0], rank=ctx.rank, world_size=ctx.world_size,
                            timeout=datetime.timedelta(seconds=TIMEOUT))
    ops = p["ops"]
    for op, n in ops[:p["before"]]:
        _collective(dist, op, n, ctx.world_size)
    during = _resources()  # what the group holds: a leak check that could not see it would be void
    if ctx.rank == p["victim"]:
        def die():
            time.sleep(p["delay_s"])
            with open(death_file, "w") as f:
                f.write(repr(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=die, daemon=True).start()
        for op, n in ops[p["before"]:]:
            _collective(dist, op, n, ctx.world_size)
        time.sleep(60)  # never reached: the killer fires first
        return "victim survived"
    error = None
    for op, n in ops[p["before"]:]:
        try:
            _collective(dist, op, n, ctx.world_size)
        except Exception as exc:
            error = (type(exc).__name__, str(exc)[:400], time.time(), op)
            break
    if error is None:
        return {"error": None}
    dist.destroy_process_group()
    after = _settled(baseline)
    # A new group of the survivors only, in this process.
    survivors = [r for r in range(ctx.world_size) if r != p["victim"]]
    new_rank = survivors.index(ctx.rank)
    ok = None
    if survivors:
        dist.init_process_group("uccl", init_method=urls[1], rank=new_rank, world_size=len(survivors),
                                timeout=datetime.timedelta(seconds=TIMEOUT))
        x = torch.full((1000,), float(new_rank + 1))
        dist.all_reduce(x)
        want = sum(range(1, len(survivors) + 1))
        ok = bool(torch.all(x == want))
        dist.destroy_process_group()
    final = _settled(baseline)
    return {"error": error, "baseline": baseline, "during": during, "after_destroy": after, "after_regroup": final, "regroup_ok": ok}


def _dev_shm() -> set:
    return set(os.listdir("/dev/shm"))


def _problems(res: list, p: dict, died: float) -> list:
    world, victim = p["world"], p["victim"]
    problems = []
    for r in range(world):
        if r == victim:
            continue
        out = res[r]
        if out is None or out["error"] is None:
            problems.append(f"rank {r}: no error after rank {victim} died ({out})")
            continue
        kind, msg, when, op = out["error"]
        late = when - died
        if f"rank {victim}" not in msg:
            problems.append(f"rank {r}: {op}: {kind} does not name the dead rank {victim}: {msg}")
        if late > TIMEOUT + SLACK:
            problems.append(f"rank {r}: raised {late:.1f} s after rank {victim} died (timeout {TIMEOUT} s)")
        base = out["baseline"]
        held = out["during"]
        assert held["nthreads"] > base["nthreads"] or len(held["fds"]) > len(base["fds"]), \
            f"rank {r}: the group held no thread or fd: the release check would see nothing"
        for stage in ("after_destroy", "after_regroup"):
            got = out[stage]
            if got["nthreads"] > base["nthreads"]:
                problems.append(f"rank {r}: {stage}: {got['nthreads']} threads, {base['nthreads']} before the group "
                                f"(python threads now {got['threads']}, before {base['threads']})")
            extra = sorted(set(got["fds"]) - set(base["fds"]))
            if extra or len(got["fds"]) > len(base["fds"]):
                problems.append(f"rank {r}: {stage}: file descriptors {extra} still open")
        if out["regroup_ok"] is not True:
            problems.append(f"rank {r}: the survivors' new group gave a wrong result")
    return problems


@pytest.mark.parametrize("transport", ["shm", "net"])
@pytest.mark.parametrize("seed", SEEDS)
def test_sigkilled_rank(transport, seed):
    p = _plan(seed)
    world, victim = p["world"], p["victim"]
    shm_before = _dev_shm()
    with tempfile.TemporaryDirectory() as tmp:
        death_file = os.path.join(tmp, "death")
        urls = tuple(f"file://{tmp}/store-{uuid.uuid4().hex}" for _ in range(2))
        env = {**transport_env(transport), "UCCL_TIMEOUT": str(TIMEOUT)}
        res = run_ranks(_kill_run, world, args=(urls, seed, death_file), env=env, may_die=(victim,), timeout=90)
        assert os.path.exists(death_file), f"rank {victim} was never killed: {res}"
        with open(death_file) as f:
            died = float(f.read())
    problems = _problems(res, p, died)
    leaked = sorted(n for n in _dev_shm() - shm_before if "uccl" in n.lower() or "torch" in n.lower())
    if leaked:
        problems.append(f"left in /dev/shm: {leaked}")
    assert not problems, "\n".join(problems)


# ---- on the emulated fabric: one rank per host namespace, net channel between hosts ----

FABRIC_SEEDS = (37,)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Ctx:
    def __init__(self) -> None:
        self.rank, self.world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def _fabric_rank(out_dir: str, seed: int, urls: tuple) -> None:
    """One rank inside a host's namespace (this file run as a script): its result as JSON."""
    import json

    ctx = _Ctx()
    result = _kill_run(ctx, urls, seed, os.path.join(out_dir, "death"))
    with open(os.path.join(out_dir, f"rank{ctx.rank}.json"), "w") as f:
        json.dump(result, f)


@pytest.mark.netns
@pytest.mark.parametrize("seed", FABRIC_SEEDS)
def test_sigkilled_rank_on_fabric(seed):
    import json
    import subprocess
    import sys

    from uccl.fabric import netns
    from uccl.fabric.emulator import Fabric, FabricSpec, available
    from uccl.fabric.ranks import rank_env

    ok, why = available()
    if not ok:
        pytest.skip(why)
    p = _plan(seed)
    world, victim = p["world"], p["victim"]
    shm_before = _dev_shm()
    with tempfile.TemporaryDirectory() as tmp:
        urls = tuple(f"file://{tmp}/store-{uuid.uuid4().hex}" for _ in range(2))
        # two leaves (a one-leaf fabric does not build), every host's packets cross it
        with Fabric(FabricSpec(hosts=world, leaves=2, spines=1, rate=None)) as fab:
            name = fab.name
            env = {**transport_env("net"), "UCCL_TIMEOUT": str(TIMEOUT), "PYTHONPATH": ROOT,
                   "UCCL_MTU": str(fab.spec.mtu - 28)}
            argv = [sys.executable, os.path.abspath(__file__), tmp, str(seed), *urls]
            procs = [fab.popen(h, argv, env={**env, **rank_env(fab, h, 0, 1, 29500)}, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for h in range(world)]
            outs = []
            for proc in procs:
                try:
                    outs.append(proc.communicate(timeout=90)[0])
                except subprocess.TimeoutExpired:
                    proc.kill()
                    outs.append(proc.communicate()[0] + "\n[killed after 90 s]")
        res = []
        for r in range(world):
            path = os.path.join(tmp, f"rank{r}.json")
            if r != victim and not os.path.exists(path):
                pytest.fail(f"rank {r} gave no result (exit {procs[r].returncode}):\n{outs[r][-3000:]}")
            res.append(json.load(open(path)) if r != victim else None)
        assert procs[victim].returncode == -signal.SIGKILL, outs[victim][-3000:]
        with open(os.path.join(tmp, "death")) as f:
            died = float(f.read())
    problems = _problems(res, p, died)
    left = [ns for ns in netns.list_namespaces() if ns.startswith(name)]
    if left:
        problems.append(f"namespaces left: {left}")
    leaked = sorted(n for n in _dev_shm() - shm_before if "uccl" in n.lower() or "torch" in n.lower())
    if leaked:
        problems.append(f"left in /dev/shm: {leaked}")
    assert not problems, "\n".join(problems)


if __name__ == "__main__":
    import sys

    sys.path.insert(0, ROOT)
    _fabric_rank(sys.argv[1], int(sys.argv[2]), tuple(sys.argv[3:5]))
