"""uccl.overlap.moe.Buffer against single-process references (tests/overlap/_moe_reference.py),
in the style of DeepEP's tests: layout counts and is_token_in_rank computed independently,
received segments checked per source, per-expert counts, combine of dispatched tokens equal
to the reference; over shared memory and the net channel, worlds of 2 to 4 ranks."""

from __future__ import annotations

import os
import time

import pytest
import torch

from tests.overlap import _moe_reference as ref
from uccl.errors import MismatchError, UcclTimeoutError
from uccl.testing import run_ranks

H, K, T = 64, 3, 40
E_PER_RANK = 4  # idle_experts empties the last quarter of the experts: the last rank's, at most


def env(transport: str) -> dict:
    return {"UCCL_TRANSPORT": transport, "OMP_NUM_THREADS": "1"}


def expert(owner_rank: int, local: int, x: torch.Tensor) -> torch.Tensor:
    """A row-wise expert, different for every (rank, local expert)."""
    g = owner_rank * 16 + local
    return (x.float() * (0.5 + 0.1 * g) + 0.01 * g).to(x.dtype)


def _new_buffer(ctx, **kw):
    from uccl.overlap.moe import Buffer

    torch.set_num_threads(1)
    return Buffer(ctx.bootstrap, **kw)


def _check_dispatch_combine(buf, ctx, kind: str, dtype, seed: int, tokens: int, alignment: int) -> None:
    R, me = ctx.world_size, ctx.rank
    E = E_PER_RANK * R
    everyone = [ref.inputs(kind, r, tokens, H, E, K, seed, dtype) for r in range(R)]
    x, idx, w = everyone[me]
    label = f"rank {me} {kind} {dtype}"

    per_rank, _, per_expert, in_rank, _ = buf.get_dispatch_layout(idx, E)
    want_rank, want_expert, want_in = ref.layout(idx, E, R)
    assert per_rank.tolist() == want_rank, label
    assert per_expert.tolist() == want_expert, label
    assert torch.equal(in_rank, want_in), label

    recv_x, recv_idx, recv_w, per_local, handle, event = buf.dispatch(
        x, num_tokens_per_rank=per_rank, is_token_in_rank=in_rank, num_tokens_per_expert=per_expert,
        topk_idx=idx, topk_weights=w, expert_alignment=alignment)
    segments = ref.received(everyone, me, E, R)
    start = 0
    for src, (sx, sidx, sw) in enumerate(segments):  # per source, in rank order
        n = sx.shape[0]
        assert torch.equal(recv_x[start:start + n], sx), f"{label}: tokens from rank {src}"
        assert torch.equal(recv_idx[start:start + n], sidx), f"{label}: local ids from rank {src}"
        torch.testing.assert_close(recv_w[start:start + n], sw, msg=lambda m: f"{label}: weights from {src}: {m}")
        start += n
    assert start == recv_x.shape[0], f"{label}: {recv_x.shape[0]} tokens received, expected {start}"
    all_idx = torch.cat([s[1] for s in segments])
    counts = [int((all_idx == e).any(1).sum()) for e in range(E // R)]
    assert per_local == [(c + alignment - 1) // alignment * alignment for c in counts], label

    # Each rank applies its own scaling; the origin gets the sum over the ranks that held the token.
    y = (recv_x.float() * (me + 1)).to(dtype)
    combined, combined_w, _ = buf.combine(y, handle, topk_weights=recv_w)
    factor = (want_in.float() * torch.arange(1, R + 1).float()).sum(1, keepdim=True)
    tol = ref.tolerance(dtype)
    torch.testing.assert_close(combined.float(), x.float() * factor, rtol=tol, atol=tol,
                               msg=lambda m: f"{label}: combine: {m}")
    valid = idx >= 0
    torch.testing.assert_close(combined_w, torch.where(valid, w, torch.zeros(())),
                               msg=lambda m: f"{label}: combined weights: {m}")

    # Cached handle: same layout, new payload, asynchronous finish.
    x2 = (x.float() * 2 + 1).to(dtype)
    recv2, none_idx, _, _, _, event = buf.dispatch(x2, handle=handle, async_finish=True)
    event.current_stream_wait()
    assert none_idx is None
    start = 0
    for src, (sx, _, _) in enumerate(segments):
        n = sx.shape[0]
        assert torch.equal(recv2[start:start + n], ((sx.float() * 2 + 1).to(dtype))), f"{label}: cached from {src}"
        start += n


def _dispatch_combine_worker(ctx, kinds, dtypes):
    buf = _new_buffer(ctx, num_bytes=1024, chunk_bytes=2048)  # tiny: forces growth and many chunks
    seed = 0
    for kind in kinds:
        for dtype in dtypes:
            seed += 1
            _check_dispatch_combine(buf, ctx, kind, dtype, seed, T + 7 * seed % 13, alignment=1 + seed % 4)
    # A much larger call after small ones: every rank grows its regions together.
    _check_dispatch_combine(buf, ctx, "random", torch.float32, 99, 300, alignment=8)
    _check_events(buf, ctx)
    buf.destroy()
    return buf.wire.landings["dispatch"].capacity


LONG = pytest.mark.long


@pytest.mark.parametrize("transport,world", [("shm", 3), ("net", 2), pytest.param("shm", 2, marks=LONG),
                                             pytest.param("shm", 4, marks=LONG), pytest.param("net", 3, marks=LONG)])
def test_dispatch_combine_match_reference(transport, world):
    dtypes = [torch.float32, torch.bfloat16]
    caps = run_ranks(_dispatch_combine_worker, world, args=(ref.ROUTINGS, dtypes), env=env(transport), timeout=150)
    assert len(set(caps)) == 1, f"receive regions differ across ranks: {caps}"


def _check_events(buf, ctx):
    """async_finish, the `with` form, and an event nobody waited on (the next call finishes it)."""
    E = E_PER_RANK * ctx.world_size
    x, idx, w = ref.inputs("random", ctx.rank, T, H, E, K, 5, torch.float32)
    per_rank, _, per_expert, in_rank, _ = buf.get_dispatch_layout(idx, E)
    recv_x, _, _, _, handle, event = buf.dispatch(x, num_tokens_per_rank=per_rank, is_token_in_rank=in_rank,
                                                  num_tokens_per_expert=per_expert, topk_idx=idx,
                                                  topk_weights=w, async_finish=True)
    with event:
        pass  # work that overlaps the dispatch would go here
    assert event.done
    combined, _, event = buf.combine(recv_x, handle, async_finish=True)
    # Not waited on: the next operation finishes it first, so the result is complete.
    buf.dispatch(x, handle=handle)
    assert event.done
    torch.testing.assert_close(combined, x * in_rank.sum(1, keepdim=True).float())


def _mismatch_worker(ctx):
    """Rank 1 differs in one argument per round; every rank must raise, naming the cause,
    and the Buffer must stay usable for the next, agreeing call."""
    E = E_PER_RANK * ctx.world_size
    buf = _new_buffer(ctx, timeout=20)
    messages = {}
    for what in ("num_experts", "hidden", "dtype"):
        e, h, dt = E, H, torch.float32
        if ctx.rank == 1:
            e, h, dt = {"num_experts": (2 * E, H, dt), "hidden": (E, 2 * H, dt),
                        "dtype": (E, H, torch.bfloat16)}[what]
        x, idx, w = ref.inputs("random", ctx.rank, T, h, e, K, 3, dt)
        per_rank, _, per_expert, in_rank, _ = buf.get_dispatch_layout(idx, e)
        try:
            buf.dispatch(x, num_tokens_per_rank=per_rank, is_token_in_rank=in_rank,
                         num_tokens_per_expert=per_expert, topk_idx=idx, topk_weights=w)
        except MismatchError as exc:
            messages[what] = str(exc)
        else:
            raise AssertionError(f"a dispatch with mismatched {what} did not raise")
        x, idx, w = ref.inputs("random", ctx.rank, T, H, E, K, 3, torch.float32)
        out = buf.dispatch_compute_combine(x, idx, w, lambda le, t: expert(ctx.rank, le, t), E)
        assert torch.isfinite(out).all()
    buf.destroy()
    return messages


def test_mismatched_calls_raise_on_every_rank():
    results = run_ranks(_mismatch_worker, 3, env=env("shm"), timeout=90)
    words = {"num_experts": "num_experts", "hidden": "hidden size", "dtype": "dtype"}
    for r, messages in enumerate(results):
        for what, word in words.items():
            assert f"rank {r}: moe.dispatch" in messages[what] and word in messages[what], messages[what]


def _absent_peer_worker(ctx):
    E = E_PER_RANK * ctx.world_size
    buf = _new_buffer(ctx, timeout=2)
    x, idx, w = ref.inputs("random", ctx.rank, T, H, E, K, 3, torch.float32)
    if ctx.rank == 1:
        time.sleep(4)  # never calls; keeps its endpoint open meanwhile
        return "absent"
    start = time.monotonic()
    try:
        buf.dispatch_compute_combine(x, idx, w, lambda le, t: t, E)
    except UcclTimeoutError as exc:
        return str(exc), time.monotonic() - start
    raise AssertionError("no timeout")


def test_absent_peer_times_out_naming_it():
    message, waited = run_ranks(_absent_peer_worker, 2, env=env("shm"), timeout=60)[0]
    assert "rank 0: moe.dispatch_compute_combine" in message and "[1]" in message, message
    assert waited < 10


def _fused_worker(ctx, kinds, dtype, path):
    buf = _new_buffer(ctx, chunk_bytes=1024, fused_path=path)
    R, me = ctx.world_size, ctx.rank
    E = E_PER_RANK * R
    for seed, kind in enumerate(kinds):
        x, idx, w = ref.inputs(kind, me, T, H, E, K, seed, dtype)
        out = buf.dispatch_compute_combine(x, idx, w, lambda le, t: expert(me, le, t), E)
        assert buf.last_path[0] == ("pipelined" if path == "pipelined" or os.environ["UCCL_TRANSPORT"] == "net"
                                    else "sequential"), buf.last_path
        want = ref.moe_output(x, idx, w, expert, E, R)
        tol = 4 * ref.tolerance(dtype)
        torch.testing.assert_close(out.float(), want.float(), rtol=tol, atol=tol,
                                   msg=lambda m: f"rank {me} {kind}: {m}")
    buf.destroy()


# the pipelined schedule on shm is forced (auto runs the sequential composition there)
@pytest.mark.parametrize("transport,world,dtype,path", [("shm", 4, torch.bfloat16, "pipelined"),
                                                        ("net", 2, torch.float32, "auto"),
                                                        pytest.param("shm", 3, torch.float32, "auto", marks=LONG)])
def test_dispatch_compute_combine_matches_reference(transport, world, dtype, path):
    run_ranks(_fused_worker, world, args=(ref.ROUTINGS, dtype, path), env=env(transport), timeout=150)


def _low_latency_worker(ctx):
    torch.set_num_threads(1)
    buf = _new_buffer(ctx)
    R, me, M = ctx.world_size, ctx.rank, 32
    E = E_PER_RANK * R
    E_loc = E // R
    fp8 = [False, True] if hasattr(torch, "float8_e4m3fn") else [False]
    for seed, (kind, use_fp8) in enumerate([(k, f) for f in fp8 for k in ["random", "skewed", "with_minus_one",
                                                                          "silent_rank"]]):
        everyone = [ref.inputs(kind, r, 24 + seed, H * 2, E, K, seed, torch.bfloat16) for r in range(R)]
        x, idx, w = everyone[me]
        recv_x, recv_count, handle, event, hook = buf.low_latency_dispatch(
            x, idx, M, E, use_fp8=use_fp8, return_recv_hook=(seed % 2 == 1))
        hook()
        if use_fp8:
            q, scale = recv_x
            recv_x = (q.float().view(E_loc, M * R, -1, 128) * scale.unsqueeze(-1)).view(E_loc, M * R, -1)
        # reference: per local expert, the sources' tokens in rank order, each source's in token order
        for le in range(E_loc):
            e = me * E_loc + le
            want = [sx[(sidx == e).any(1)] for sx, sidx, _ in everyone]
            want = torch.cat(want)
            assert int(recv_count[le]) == want.shape[0], f"rank {me} {kind}: expert {e} count"
            got = recv_x[le, :want.shape[0]].float()
            tol = 0.07 if use_fp8 else 0
            torch.testing.assert_close(got, want.float(), rtol=tol, atol=tol,
                                       msg=lambda m: f"rank {me} {kind}: expert {e}: {m}")
        # every expert applies its own function; the origin gets the weighted sum
        out = torch.zeros(E_loc, M * R, H * 2, dtype=torch.bfloat16)
        for le in range(E_loc):
            out[le] = expert(me, le, recv_x[le].to(torch.bfloat16))
        combined, event, hook = buf.low_latency_combine(out, idx, w, handle, return_recv_hook=(seed % 2 == 0))
        hook()
        want = ref.moe_output(x if not use_fp8 else x, idx, w, expert, E, R)
        tol = 0.15 if use_fp8 else 0.05
        torch.testing.assert_close(combined.float(), want.float(), rtol=tol, atol=tol,
                                   msg=lambda m: f"rank {me} {kind}: low_latency_combine: {m}")
    buf.destroy()


@pytest.mark.parametrize("transport,world,arena", [("shm", 4, None), ("shm", 2, 0), pytest.param("net", 2, None, marks=LONG)])
def test_low_latency_dispatch_combine_match_reference(transport, world, arena):
    """bfloat16, then fp8 with per-128 scales (where torch has it); with no shared arena the
    landings fall back to private memory (peers then write with a system call)."""
    extra = {} if arena is None else {"UCCL_SHM_ARENA_BYTES": str(arena)}
    run_ranks(_low_latency_worker, world, env={**env(transport), **extra}, timeout=150)


def _low_latency_growth_worker(ctx):
    """Low-latency calls whose landings must grow (M=48, then 96: 1 MiB, then 2 MiB each for
    dispatch and combine, in a 4 MiB arena): checked against the reference after each call."""
    buf = _new_buffer(ctx)
    R, me, E, k, hidden = ctx.world_size, ctx.rank, 8, 2, 256
    E_loc = E // R
    placed = []
    for seed, M in enumerate([48, 96]):
        everyone = [ref.inputs("random", r, M, hidden, E, k, seed, torch.float32) for r in range(R)]
        x, idx, w = everyone[me]
        recv_x, recv_count, handle, _, _ = buf.low_latency_dispatch(x, idx, M, E)
        for le in range(E_loc):
            want = torch.cat([sx[(sidx == me * E_loc + le).any(1)] for sx, sidx, _ in everyone])
            assert int(recv_count[le]) == want.shape[0], f"rank {me} M={M}: expert {le} count"
            assert torch.equal(recv_x[le, :want.shape[0]], want), f"rank {me} M={M}: expert {le} rows"
        out = torch.stack([expert(me, le, recv_x[le]) for le in range(E_loc)])
        combined, _, _ = buf.low_latency_combine(out, idx, w, handle)
        torch.testing.assert_close(combined, ref.moe_output(x, idx, w, expert, E, R), rtol=1e-5, atol=1e-5,
                                   msg=lambda m: f"rank {me} M={M}: low_latency_combine: {m}")
        placed.append({name: (buf.wire.landings[name].capacity, buf.wire.landings[name].in_arena)
                       for name in ("ll_dispatch", "ll_combine")})
    buf.destroy()
    return placed


def test_low_latency_landings_grow_within_the_arena():
    """A landing that grows gives its old arena block back before taking the new one, so the
    grown landings still fit the arena (and same-host peers keep writing with memcpy)."""
    results = run_ranks(_low_latency_growth_worker, 2, env={**env("shm"), "UCCL_SHM_ARENA_BYTES": str(4 << 20)},
                        timeout=120)
    for r, placed in enumerate(results):
        assert placed[0] == {"ll_dispatch": (1 << 20, True), "ll_combine": (1 << 20, True)}, (r, placed)
        assert placed[1] == {"ll_dispatch": (2 << 20, True), "ll_combine": (2 << 20, True)}, (r, placed)
