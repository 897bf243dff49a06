"""all_to_all aggregated per host (UCCL_ALGO=aggregated, and the tuner's pick for small
calls with several ranks per host over the net): results against numpy for every dtype,
in place, with per-rank counts (all_to_all_v), on declared hosts (the net channel between
them, shared memory inside), the fallback to flat on uneven hosts, and the claim itself:
across hosts a rank talks only to its rail peer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.collectives.reference import available_dtypes, check, make, values, zeros
from uccl.testing import run_ranks

TWO_BY_TWO = "0-1=h0;2-3=h1"               # 2 hosts x 2 ranks
INTERLEAVED = "0=h0;1=h1;2=h2;3=h0;4=h1;5=h2"  # 3 hosts x 2 ranks, a host's ranks not adjacent
UNEVEN = "0-1=h0;2=h1;3-4=h2"              # hosts of 2, 1 and 2 ranks: flat


def block(src: int, dst: int, n: int, dtype: str) -> np.ndarray:
    """What rank src sends rank dst: values that tell sender, receiver and position apart."""
    v = values(src * 31 + dst, n, dtype, "sum")
    return v


def _exchanges(ctx, big):
    """all_to_all (out of place and in place) and all_to_all_v for every dtype; returns
    what the tuner picks for a small and a large all_to_all."""
    from uccl.collectives import Communicator

    comm = Communicator(ctx.bootstrap)
    W, r = ctx.world_size, ctx.rank
    for dtype in available_dtypes():
        esize = np.dtype("float16" if dtype == "bfloat16" else dtype).itemsize
        for n in [0, 1, 1001] + ([big // esize + 3] if dtype in ("int8", "float32") else []):
            send = np.concatenate([block(r, q, n, dtype) for q in range(W)])
            want = np.concatenate([block(q, r, n, dtype) for q in range(W)])
            out = zeros(dtype, n * W)
            comm.all_to_all(make(dtype, send), out)
            check(out, want, dtype, "sum", f"all_to_all {dtype} n={n} rank {r}")
            buf = make(dtype, send)
            comm.all_to_all(buf, buf)
            check(buf, want, dtype, "sum", f"all_to_all in place {dtype} n={n} rank {r}")
        # Per-pair counts (zeros included), holes between the blocks that must stay untouched.
        rng = np.random.default_rng(7)
        matrix = rng.integers(0, 40, (W, W))
        matrix[0, W - 1] = 0
        matrix[W - 1, 1] = 3000
        sc, rc = matrix[r].tolist(), matrix[:, r].tolist()
        sd = np.cumsum([0] + [c + 2 for c in sc[:-1]]).tolist()
        rd = np.cumsum([0] + [c + 5 for c in rc[:-1]]).tolist()
        send = np.full(sd[-1] + sc[-1], 1.0)
        for q in range(W):
            send[sd[q]:sd[q] + sc[q]] = block(r, q, sc[q], dtype)
        want = np.full(rd[-1] + rc[-1], 9.0)
        for q in range(W):
            want[rd[q]:rd[q] + rc[q]] = block(q, r, rc[q], dtype)
        out = make(dtype, np.full(len(want), 9.0))
        comm.all_to_all_v(make(dtype, send), sc, out, rc, sd, rd)
        check(out, want, dtype, "sum", f"all_to_all_v {dtype} rank {r}")
    comm.barrier()
    return comm.algorithm("all_to_all", 4 << 10)[0], comm.algorithm("all_to_all", 4 << 20)[0]


@pytest.mark.parametrize("spec", [TWO_BY_TWO, INTERLEAVED])
def test_aggregated_all_to_all_matches_numpy(spec):
    world = len(spec.split(";")) if spec == INTERLEAVED else 4
    picks = run_ranks(_exchanges, world, args=(600 << 10,), env={"UCCL_TOPOLOGY": spec, "UCCL_ALGO": "aggregated"},
                      timeout=300)
    assert set(picks) == {("aggregated", "aggregated")}


def test_uneven_hosts_fall_back_to_flat_and_stay_correct():
    picks = run_ranks(_exchanges, 5, args=(1 << 16,), env={"UCCL_TOPOLOGY": UNEVEN, "UCCL_ALGO": "aggregated"},
                      timeout=300)
    # forced, the name stays; the algorithm runs flat (the writes test below shows which path a call takes)
    assert set(picks) == {("aggregated", "aggregated")}


def _writes_per_peer(ctx, nbytes, algo):
    """Writes this rank makes to each peer during one all_to_all of nbytes per rank, and
    what the tuner picks without forcing (small and large)."""
    from uccl.collectives import Communicator
    from uccl.config import Config

    comm = Communicator(ctx.bootstrap, dataclasses.replace(Config.from_env(), algo=algo))
    x = np.arange(nbytes // 4, dtype=np.float32) + ctx.rank * 1000
    y = np.empty_like(x)
    comm.all_to_all(x, y)  # warm-up: registrations, first credits
    before = [p["writes"] for p in comm.endpoint.stats()["peers"]]
    comm.all_to_all(x, y)
    writes = [p["writes"] - b for p, b in zip(comm.endpoint.stats()["peers"], before)]
    W, n = ctx.world_size, len(x) // ctx.world_size
    want = np.concatenate([np.arange(ctx.rank * n, (ctx.rank + 1) * n, dtype=np.float32) + q * 1000
                           for q in range(W)])
    ok = np.array_equal(y, want)
    auto = Communicator(ctx.bootstrap)
    picks = (auto.algorithm("all_to_all", nbytes)[0], auto.algorithm("all_to_all", 4 << 20)[0])
    comm.barrier()
    return writes, ok, picks


RAIL = {0: 2, 1: 3, 2: 0, 3: 1}  # the rank at the same position on the other host


@pytest.mark.parametrize("algo", ["aggregated", "pairwise"])
def test_across_hosts_a_rank_writes_only_to_its_rail_peer(algo):
    """2 hosts x 2 ranks, 1 KiB per rank: aggregated, each rank's cross-host writes go to its
    rail peer only; flat (pairwise) ones to both ranks of the other host."""
    res = run_ranks(_writes_per_peer, 4, args=(1 << 10, algo), env={"UCCL_TOPOLOGY": TWO_BY_TWO}, timeout=120)
    for r, (writes, ok, picks) in enumerate(res):
        assert ok, r
        assert picks == ("aggregated", picks[1]) and picks[1] != "aggregated", picks
        across = {p for p, w in enumerate(writes) if p // 2 != r // 2 and w}
        assert across == ({RAIL[r]} if algo == "aggregated" else {p for p in range(4) if p // 2 != r // 2}), \
            (r, writes)


def _disagree(ctx, expecting_rank):
    """all_to_all_v, aggregated, where `expecting_rank` expects 2 elements from rank 0,
    which sends it 1: every rank must fail with a MismatchError (at the latest in its next
    call), quickly."""
    import time

    from uccl.collectives import Communicator
    from uccl.errors import MismatchError, UcclError

    comm = Communicator(ctx.bootstrap)
    W, r = ctx.world_size, ctx.rank
    recv = [2 if (r == expecting_rank and q == 0) else 1 for q in range(W)]
    start = time.monotonic()
    try:
        comm.all_to_all_v(np.ones(W, np.float32), [1] * W, np.zeros(sum(recv), np.float32), recv)
        # A rank whose own part went through may return (as flat); its next call must fail.
        comm.barrier()
        return ("no error", "", 0.0)
    except MismatchError as exc:
        return ("MismatchError", str(exc), time.monotonic() - start)
    except UcclError as exc:
        return (type(exc).__name__, str(exc), time.monotonic() - start)
    finally:
        ctx.bootstrap.barrier()


@pytest.mark.parametrize("expecting_rank", [1, 2])  # on rank 0's host (the header check), across (a chunk's length)
def test_count_disagreement_fails_on_every_rank(expecting_rank):
    res = run_ranks(_disagree, 4, args=(expecting_rank,),
                    env={"UCCL_TOPOLOGY": TWO_BY_TWO, "UCCL_ALGO": "aggregated", "UCCL_TIMEOUT": "20"}, timeout=120)
    for r, (kind, msg, elapsed) in enumerate(res):
        assert kind == "MismatchError" and f"rank {r}" in msg and elapsed < 10, (r, kind, msg, elapsed)
    assert any(f"rank {expecting_rank}" in msg and "expect" in msg for _, msg, _ in res), res


FABRIC_WORKER = """
import torch, torch.distributed as dist
dist.init_process_group("uccl")
r, W = dist.get_rank(), dist.get_world_size()
view = dist.distributed_c10d._get_default_group()._get_backend(torch.device("cpu"))
comm = getattr(view, "_pg", view).communicator
ok = True
for n in (1, 100, 1000):  # elements per block: 4 B .. 4 KB (32 KB per rank)
    x = torch.arange(n * W, dtype=torch.float32) + r * 1e6
    out = torch.empty(n * W)
    dist.all_to_all_single(out, x)
    want = torch.cat([torch.arange(r * n, (r + 1) * n, dtype=torch.float32) + q * 1e6 for q in range(W)])
    ok = ok and torch.equal(out, want)
print(f"rank {r} algo={comm.algorithm('all_to_all', 4 * 1000 * W)[0]} ok={ok}", flush=True)
dist.barrier()
dist.destroy_process_group()
"""


@pytest.mark.netns
def test_small_all_to_all_single_aggregates_on_a_fabric(tmp_path):
    """4 hosts x 2 ranks under `uccl-run --fabric`: torch's all_to_all_single of a few KB
    takes the aggregated algorithm without being told, and is correct."""
    from uccl.fabric import emulator as fabmod
    from uccl.testing.fabric import run_on_fabric

    ok, why = fabmod.available()
    if not ok:
        pytest.skip(f"cannot build a fabric here: {why}")
    res = run_on_fabric(tmp_path / "worker.py", FABRIC_WORKER)
    assert res.returncode == 0, res.stdout + res.stderr
    for r in range(8):
        assert f"rank {r} algo=aggregated ok=True" in res.stdout, res.stdout + res.stderr
