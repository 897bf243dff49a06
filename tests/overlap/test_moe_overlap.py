"""dispatch_compute_combine overlaps for real: the trace the Buffer records of its last call
(what was computed, what landed, what was reduced, with times on the host's monotonic
clock, which all local ranks share) shows the order the issue asks for. The pipelined
schedule is forced (fused_path="pipelined"): over shared memory "auto" runs the sequential
composition."""

from __future__ import annotations

import time

import torch

from tests.overlap import _moe_reference as ref
from uccl.testing import run_ranks

H, K = 64, 2


def _slow_peer_worker(ctx):
    from uccl.overlap.moe import Buffer

    torch.set_num_threads(1)
    E = 2 * ctx.world_size
    buf = Buffer(ctx.bootstrap, chunk_bytes=1024, fused_path="pipelined")
    x, idx, w = ref.inputs("random", ctx.rank, 64, H, E, K, 1, torch.float32)
    if ctx.rank == ctx.world_size - 1:
        time.sleep(0.5)  # the slow peer: its header and tokens come half a second late
    start = time.monotonic()
    buf.dispatch_compute_combine(x, idx, w, lambda e, t: t * (e + 1), E)
    buf.destroy()
    return start, buf.trace


def test_local_tokens_compute_before_a_slow_peer_arrives():
    results = run_ranks(_slow_peer_worker, 3, env={"UCCL_TRANSPORT": "shm", "OMP_NUM_THREADS": "1"}, timeout=90)
    slow_start = results[2][0]
    for rank in (0, 1):
        trace = results[rank][1]
        computed_local = [t for ev, peer, _, t in trace if ev == "computed" and peer == rank]
        landed_slow = [t for ev, peer, _, t in trace if ev == "landed" and peer == 2]
        assert computed_local and landed_slow, trace
        assert trace[0][:2] == ("computed", rank), f"rank {rank}: the first thing done was {trace[0]}"
        assert max(computed_local) < slow_start < min(landed_slow), \
            f"rank {rank}: local chunks done at {max(computed_local):.3f}, slow peer started {slow_start:.3f}"


def _slow_expert_worker(ctx):
    from uccl.overlap.moe import Buffer

    torch.set_num_threads(1)
    E = 2 * ctx.world_size
    # an expert runs a chunk of rows at a time
    buf = Buffer(ctx.bootstrap, chunk_bytes=2048, max_batch_chunks=1, fused_path="pipelined")
    x = torch.randn(96, H)
    idx = torch.full((96, K), -1, dtype=torch.int64)
    if ctx.rank == 0:
        idx[:, 0] = E - 1  # every token of rank 0 goes to rank 1's last expert

    def expert_fn(e, t):
        if ctx.rank == 1:
            time.sleep(0.05)  # a slow expert: each chunk takes 50 ms
        return t * 2

    out = buf.dispatch_compute_combine(x, idx, torch.ones(96, K), expert_fn, E)
    buf.destroy()
    return buf.trace, tuple(out.shape)


def test_results_stream_home_while_later_chunks_compute():
    (trace0, out0), (trace1, _) = run_ranks(_slow_expert_worker, 2, env={"UCCL_TRANSPORT": "shm",
                                                                       "OMP_NUM_THREADS": "1"}, timeout=90)
    reduced = [t for ev, peer, _, t in trace0 if ev == "reduced" and peer == 1]
    computed = [t for ev, peer, _, t in trace1 if ev == "computed" and peer == 0]
    assert len(computed) >= 4, trace1  # several chunks, so there is something to overlap
    assert len(reduced) == len(computed)
    assert min(reduced) < max(computed), "rank 0 reduced nothing before rank 1 had computed every chunk"
    # each result chunk was reduced before the chunk computed two steps after it was done
    for i in range(len(computed) - 2):
        assert sorted(reduced)[i] < sorted(computed)[i + 2], (reduced, computed)
    assert out0 == (96, H)


def _calls_worker(ctx):
    from uccl.overlap.moe import Buffer

    torch.set_num_threads(1)
    E = 4 * ctx.world_size
    # generous waits: no peer counts as late here, so nothing runs twice
    buf = Buffer(ctx.bootstrap, chunk_bytes=1024, header_grace=5.0, lag_wait=5.0, fused_path="pipelined")
    x, idx, w = ref.inputs("random", ctx.rank, 64, H, E, K, 3, torch.float32)
    calls = []

    def expert_fn(e, t):
        calls.append((e, t.shape[0]))
        return t * (e + 1)

    out = buf.dispatch_compute_combine(x, idx, w, expert_fn, E)
    want = ref.moe_output(x, idx, w, lambda r, le, t: t * (le + 1), E, ctx.world_size)
    buf.destroy()
    return calls, idx.tolist(), (out - want).abs().max().item()


def test_each_expert_runs_once_over_all_its_rows():
    """The weights of a local expert pass through memory once per call (as in the sequential
    path), not once per landed chunk: one expert_fn call per expert, over all its rows."""
    R = 3
    results = run_ranks(_calls_worker, R, env={"UCCL_TRANSPORT": "shm", "OMP_NUM_THREADS": "1"}, timeout=90)
    E_loc = 4
    for rank, (calls, _, err) in enumerate(results):
        assert err < 1e-4, f"rank {rank}: output off by {err}"
        want = {}
        for _, idx, _ in results:  # (token, expert) pairs every source sends this rank, per local expert
            for le in range(E_loc):
                n = int((torch.tensor(idx) == rank * E_loc + le).sum())
                if n:
                    want[le] = want.get(le, 0) + n
        assert sorted(e for e, _ in calls) == sorted(want), f"rank {rank}: expert calls {calls}"
        assert dict(calls) == want, f"rank {rank}: rows per expert call {calls}, pairs {want}"


def _late_peer_calls_worker(ctx):
    from uccl.overlap.moe import Buffer

    torch.set_num_threads(1)
    E = 4 * ctx.world_size
    buf = Buffer(ctx.bootstrap, chunk_bytes=1024)  # default header_grace (50 ms)
    x, idx, w = ref.inputs("random", ctx.rank, 64, H, E, K, 4, torch.float32)
    calls = []

    def expert_fn(e, t):
        calls.append(e)
        return t * (e + 1)

    if ctx.rank == ctx.world_size - 1:
        time.sleep(0.3)  # late past header_grace
    out = buf.dispatch_compute_combine(x, idx, w, expert_fn, E)
    want = ref.moe_output(x, idx, w, lambda r, le, t: t * (le + 1), E, ctx.world_size)
    buf.destroy()
    return calls, (out - want).abs().max().item(), buf.last_path


def test_fused_call_on_shm_never_passes_twice_over_an_expert():
    """Over shared memory the copies run on the caller's core: nothing to overlap with, so
    the fused call is the sequential composition there (same path on every rank), and a
    late peer no longer makes the others run an expert over their own tokens alone first
    (an extra pass over its weights: 0.88x sequential, measured)."""
    results = run_ranks(_late_peer_calls_worker, 3, env={"UCCL_TRANSPORT": "shm", "OMP_NUM_THREADS": "1"},
                        timeout=90)
    for rank, (calls, err, path) in enumerate(results):
        assert err < 1e-4, f"rank {rank}: output off by {err}"
        assert len(calls) == len(set(calls)), f"rank {rank}: an expert ran more than once: {calls}"
        assert path[0] == "sequential" and "shared memory" in path[1], f"rank {rank}: path {path}"
