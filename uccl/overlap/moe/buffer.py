"""Buffer: DeepEP's normal-mode interface (get_dispatch_layout, dispatch, combine) and a
fused dispatch -> expert compute -> combine, on uccl's transport.

Every operation starts with an all-to-all of small headers (what the call is, its shapes
and dtype, and the sender's row of the token-count matrix). After it every rank knows the
whole count matrix, hence where each source's tokens go in each receiver's buffer, and
whether any receive region must grow (all ranks grow together and swap keys). The header
round is also the flow control: a rank writes into a peer's buffer only after that peer's
header for the same operation arrived, i.e. after the peer finished the operation before.

Then every rank writes its tokens (one record per token and destination rank) straight
into the receivers' registered buffers with writes-with-immediate, in chunks; each
completion names (operation, chunk) and the source, so a receiver knows what has landed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from uccl.config import Config
from uccl.errors import InvalidArgumentError, MismatchError
from uccl.overlap._group import bootstrap_for
from uccl.overlap.moe import fused
from uccl.overlap.moe import layout as L
from uccl.overlap.moe.events import EventOverlap
from uccl.overlap.moe.low_latency import LowLatencyMixin
from uccl.overlap.moe.records import RecordLayout, align8, check_payload, dtype_code
from uccl.overlap.moe.wire import DATA, RESULT, Wire, imm_of, split_imm

# header fields (int64)
_SEQ, _OP, _EXPERTS, _HIDDEN, _DTYPE, _K, _CHUNK, _ROW, _COUNTS = range(9)
_FIELDS = {_OP: "operation", _EXPERTS: "num_experts", _HIDDEN: "hidden size", _DTYPE: "dtype",
           _K: "top-k", _CHUNK: "chunk size", _ROW: "row bytes"}
OPS = {1: "dispatch", 2: "dispatch (cached handle)", 3: "combine", 4: "dispatch_compute_combine",
       5: "low_latency_dispatch", 6: "low_latency_combine",
       7: "dispatch_compute_combine (dispatch)", 8: "dispatch_compute_combine (combine)"}
_OP_CODE = {name: code for code, name in OPS.items()}


def weighted_experts(expert_fn, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per row, sum_j weights[:, j] * expert_fn(ids[:, j], row) over its valid local ids, in fp32;
    expert_fn sees each expert's rows together. Differentiable (used again in backward)."""
    out = torch.zeros(x.shape[0], x.shape[1], dtype=torch.float32)
    flat = ids.flatten()
    pairs = (flat >= 0).nonzero().flatten()
    if not pairs.numel():
        return out
    pairs = pairs[torch.argsort(flat[pairs], stable=True)]  # (row, slot) pairs grouped by expert
    experts, counts = torch.unique_consecutive(flat[pairs], return_counts=True)
    rows, w = pairs // ids.shape[1], weights.flatten()[pairs]
    at = 0
    for e, n in zip(experts.tolist(), counts.tolist()):
        sel = rows[at:at + n]
        y = expert_fn(e, x.index_select(0, sel)).float()
        out.index_add_(0, sel, y * w[at:at + n].unsqueeze(1))
        at += n
    return out


@dataclass
class Handle:
    """What a dispatch leaves for its combine (opaque to users, as DeepEP's handle)."""

    counts: list                # R x R: tokens rank s sent rank d
    send_idx: list              # per destination: our token indices sent there
    is_token_in_rank: torch.Tensor
    num_tokens: int
    num_experts: int
    num_recv_tokens_per_expert: list = field(default_factory=list)


def _chunks(n: int, ct: int) -> int:
    return (n + ct - 1) // ct


class Buffer(LowLatencyMixin):
    """Expert-parallel communication buffer for the ranks of `group` (a torch ProcessGroup
    with any backend, a uccl Communicator, or a uccl Bootstrap).

    num_bytes: initial size of each receive region (grown on demand, on all ranks together).
    chunk_bytes: the unit of a write and of a completion (smaller: finer overlap, more ops).
    max_local_experts: most experts a rank may hold (sizes the header).
    max_batch_chunks: in dispatch_compute_combine, an expert runs over at most this many chunks'
      worth of rows at a time, sending home the results finished by each slice (0: all its rows
      at once, which reads its weights once; see fused.py).
    header_grace: seconds dispatch_compute_combine waits for the peers' headers before it
      computes its own tokens alone (that costs one more pass over the expert weights, so it is
      done only when a peer is late).
    lag_wait: seconds an expert waits for a source whose rows for it lag behind the others'
      before it runs without them (that source's rows then get a run of their own later).
    fused_path: how dispatch_compute_combine runs: "pipelined" (fused.py's schedule),
      "sequential" (dispatch -> experts -> combine, one pass each), or "auto": sequential when
      every rank reaches every peer over shared memory (a shared-memory copy runs on the
      caller's core, so there is nothing to overlap with: measured 0.83-0.91x of sequential
      pipelined), pipelined otherwise. Decided once, from what every rank reports, so every
      rank takes the same path; `last_path` holds (path, reason) of the last call.
    compute_nice: the calling thread's nice value while the fused call computes (the engine's
      threads and the kernel's packet path keep theirs, so compute cannot starve the wire on a
      host with fewer cores than ranks); restored afterwards where permitted (root), else kept.
    Low-latency mode (low_latency_dispatch / low_latency_combine) lives in low_latency.py.
    """

    num_sms = 0  # DeepEP's knob; nothing to size on CPUs

    def __init__(self, group, num_bytes: Optional[int] = None, num_nvl_bytes: int = 0, num_rdma_bytes: int = 0,
                 low_latency_mode: bool = False, num_qps_per_rank: int = 1, *, chunk_bytes: int = 128 << 10,
                 max_local_experts: int = 256, max_batch_chunks: int = 0,
                 header_grace: float = 0.05, lag_wait: float = 0.02, compute_nice: int = 0,
                 fused_path: str = "auto", config: Optional[Config] = None,
                 timeout: Optional[float] = None) -> None:
        self.group = group
        bootstrap = bootstrap_for(group, "moe")
        # Waits sleep soon: a rank waiting for chunks must leave the cores to the ranks still
        # computing (on a host with fewer cores than ranks, a yielding waiter steals their time).
        cfg = config or dataclasses.replace(Config.from_env(), spin_us=min(Config.from_env().spin_us, 20.0),
                                            yield_us=0.0)
        self.rank, self.group_size = bootstrap.rank, bootstrap.world_size
        if fused_path not in ("auto", "pipelined", "sequential"):
            raise InvalidArgumentError(f"rank {self.rank}: moe.Buffer: fused_path must be 'auto', 'pipelined' "
                                       f"or 'sequential', got {fused_path!r}")
        self.max_local_experts = max_local_experts
        self._header_ints = _COUNTS + self.group_size + max_local_experts
        self.wire = Wire(bootstrap, cfg, self._header_ints)
        if timeout is not None:
            self.wire.timeout = float(timeout)
        self.chunk_bytes = int(chunk_bytes)
        self.header_grace = float(header_grace)
        self.lag_wait = float(lag_wait)
        self.max_batch_chunks = int(max_batch_chunks)
        self.compute_nice = int(compute_nice)
        self._fused_path = self._decide_fused_path(bootstrap, fused_path)
        self.last_path: Optional[tuple] = None
        self._seq = 0
        self._pending: Optional[EventOverlap] = None
        # dispatch_compute_combine's record of its last call: (event, peer, chunk, time.monotonic())
        # with event "posted" (our tokens were handed to the transport), "computed" (a slice of an
        # expert's rows from that peer; chunk = the expert), "landed" (a peer's token chunk),
        # "reduced" (a run of result rows from that peer, chunk = its first row, was added up);
        # trace_steps: (expert, rows, start, end) per expert run; trace_start: the call's start.
        self.trace: list = []
        self.trace_steps: list = []
        self.trace_start = 0.0
        initial = num_bytes or max(num_nvl_bytes, num_rdma_bytes)
        if initial:
            self.wire.ensure_landing("dispatch", initial)
            self.wire.ensure_landing("combine", initial)

    def _decide_fused_path(self, bootstrap, wanted: str) -> tuple:
        """(path, reason) for dispatch_compute_combine; collective (an allgather of every rank's
        channel kinds), so the answer is the same on every rank."""
        if wanted != "auto":
            return wanted, f"fused_path={wanted!r}"
        mine = sorted({self.wire.ep.channel(p) for p in range(self.group_size) if p != self.rank})
        kinds = set().union(*(pickle.loads(b) for b in bootstrap.allgather(pickle.dumps(mine))))
        if kinds <= {"shm"}:
            return "sequential", "shared memory: copies run on the caller's core, nothing to overlap with"
        return "pipelined", f"channels {sorted(kinds)}: the transport moves rows while experts compute"

    # -- DeepEP's introspection -----------------------------------------------------------
    def get_local_buffer_tensor(self, dtype: torch.dtype, offset: int = 0, use_rdma_buffer: bool = False):
        return self.wire.landings["dispatch"].tensor[offset:].view(dtype)

    @staticmethod
    def set_num_sms(new_num_sms: int) -> None:
        pass

    def destroy(self) -> None:
        """Collective: finishes pending work, waits for every rank (a peer's last writes must be
        consumed before its endpoint goes away), then closes the endpoint."""
        self._settle()
        self.wire.bootstrap.barrier()
        self.wire.close()

    # -- plumbing ---------------------------------------------------------------------------
    def _settle(self) -> None:
        """Finishes an earlier asynchronous operation that nobody waited on."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.current_stream_wait()

    def _begin(self, previous_event: Optional[EventOverlap]) -> int:
        self._settle()
        if previous_event is not None:
            previous_event.current_stream_wait()
        self._seq += 1
        return self._seq

    def _finish(self, finisher: Callable[[], None], async_finish: bool) -> EventOverlap:
        event = EventOverlap(finisher)
        if async_finish:
            self._pending = event
            return event
        event.current_stream_wait()
        return EventOverlap()

    def _err(self, op: str, msg: str) -> InvalidArgumentError:
        return InvalidArgumentError(f"rank {self.rank}: moe.{op}: {msg}")

    def _header(self, op: str, num_experts: int, hidden: int, dcode: int, k: int, row_bytes: int,
                chunk_tokens: int, counts_row, expert_counts=None) -> torch.Tensor:
        R = self.group_size
        rows = torch.zeros(R, self._header_ints, dtype=torch.int64)
        rows[:, _SEQ] = self._seq
        rows[:, _OP] = _OP_CODE[op]
        rows[:, _EXPERTS] = num_experts
        rows[:, _HIDDEN] = hidden
        rows[:, _DTYPE] = dcode
        rows[:, _K] = k
        rows[:, _CHUNK] = chunk_tokens
        rows[:, _ROW] = row_bytes
        rows[:, _COUNTS:_COUNTS + R] = torch.as_tensor(counts_row, dtype=torch.int64)
        if expert_counts is not None:  # per destination: our tokens for each of its experts
            rows[:, _COUNTS + R:_COUNTS + R + expert_counts.shape[1]] = expert_counts
        return rows

    def _agree(self, seq: int, op: str, rows: torch.Tensor, post_only: bool = False):
        """Exchanges headers; raises on every rank (naming the first differing rank and field)
        when the ranks did not call the same thing. Returns [source, header] and the count matrix."""
        self.wire.post_headers(seq, rows)
        if post_only:
            return None
        got = self.wire.wait_headers(seq, lambda: f"moe.{op}")
        return self._check_headers(op, rows[0], got)

    def _check_headers(self, op: str, mine: torch.Tensor, got: torch.Tensor):
        R = self.group_size
        for src in range(R):
            for f, name in _FIELDS.items():
                if int(got[src, f]) != int(mine[f]):
                    self.wire.drain()
                    if f == _OP:
                        cause = f"rank {src} called {OPS.get(int(got[src, f]), '?')}, this rank called {op}"
                    else:
                        cause = (f"{name} differs: rank {src} has {int(got[src, f])}, "
                                 f"rank {self.rank} has {int(mine[f])}")
                    raise MismatchError(f"rank {self.rank}: moe.{op}: mismatched call across ranks: {cause}")
        counts = got[:, _COUNTS:_COUNTS + R].tolist()
        return got, counts

    def _chunk_tokens(self, row_bytes: int) -> int:
        return max(1, self.chunk_bytes // row_bytes)

    def _post_segments(self, seq: int, kind: int, staging: str, landing, row_bytes: int, ct: int,
                       peers: list) -> None:
        """peers: (dest, first local row, count, first remote row); one write per chunk."""
        for dest, local_row, count, remote_row in peers:
            for c in range(_chunks(count, ct)):
                n = min(ct, count - c * ct)
                self.wire.write(dest, staging, landing, length=n * row_bytes, offset=(local_row + c * ct) * row_bytes,
                                remote_offset=(remote_row + c * ct) * row_bytes, imm=imm_of(seq, kind, c))

    def _receive(self, seq: int, kind: int, expected: dict, what: str,
                 on_chunk: Callable[[int, int], None]) -> None:
        """Waits for every expected chunk ({source: chunks}), calling on_chunk(source, chunk) as each lands."""
        left = dict(expected)
        deadline = time.monotonic() + self.wire.timeout
        while any(left.values()):
            got = self.wire.take(seq, (kind,))
            for c in got:
                left[c.peer] -= 1
                on_chunk(c.peer, split_imm(c.imm)[2])
            if not got and any(left.values()):
                self.wire.wait_any(deadline, lambda: f"moe.{what}: chunks still missing from "
                                                     f"{ {p: n for p, n in left.items() if n} }")

    # -- layout -----------------------------------------------------------------------------
    def get_dispatch_layout(self, topk_idx: torch.Tensor, num_experts: int, previous_event=None,
                            async_finish: bool = False, allocate_on_comm_stream: bool = False):
        """(num_tokens_per_rank [R], None, num_tokens_per_expert [E], is_token_in_rank [T, R], event)."""
        if previous_event is not None:
            previous_event.current_stream_wait()
        L.check_topk(self.rank, "get_dispatch_layout", topk_idx, num_experts, self.group_size)
        per_rank, per_expert, in_rank = L.dispatch_layout(topk_idx.cpu(), num_experts, self.group_size)
        dev = topk_idx.device
        return per_rank.to(dev), None, per_expert.to(dev), in_rank.to(dev), EventOverlap()

    # -- dispatch ---------------------------------------------------------------------------
    def dispatch(self, x, handle: Optional[Handle] = None, num_tokens_per_rank=None, num_tokens_per_rdma_rank=None,
                 is_token_in_rank=None, num_tokens_per_expert=None, topk_idx=None, topk_weights=None,
                 expert_alignment: int = 1, previous_event=None, async_finish: bool = False,
                 allocate_on_comm_stream: bool = False, num_experts: Optional[int] = None, _op: Optional[str] = None):
        """Sends each token once to every rank holding one of its experts.

        Returns (recv_x, recv_topk_idx, recv_topk_weights, num_recv_tokens_per_expert_list,
        handle, event); with a cached handle, (recv_x, None, None, None, None, event).
        recv_x holds the sources' tokens in rank order, each source's in its token order.
        recv_topk_idx has local expert ids, -1 where the expert lives on another rank (its
        weight is then 0)."""
        op = _op or ("dispatch (cached handle)" if handle is not None else "dispatch")
        parts = check_payload(self.rank, "dispatch", x)
        device = (x[0] if isinstance(x, (tuple, list)) else x).device
        T, H = parts[0].shape
        R, me = self.group_size, self.rank
        if handle is not None:
            in_rank, E, k = handle.is_token_in_rank, handle.num_experts, 0
            if handle.num_tokens != T:
                raise self._err("dispatch", f"x has {T} tokens, the cached handle was made for {handle.num_tokens}")
            topk_idx = topk_weights = None
        else:
            if topk_idx is not None:
                topk_idx = topk_idx.cpu()
                E = num_experts or (num_tokens_per_expert.numel() if num_tokens_per_expert is not None else None)
                if E is None:
                    raise self._err("dispatch", "pass num_tokens_per_expert (or num_experts) with topk_idx")
                L.check_topk(me, "dispatch", topk_idx, E, R)
                if topk_idx.shape[0] != T:
                    raise self._err("dispatch", f"topk_idx has {topk_idx.shape[0]} rows, x has {T} tokens")
                if is_token_in_rank is None or num_tokens_per_expert is None:
                    _, num_tokens_per_expert, is_token_in_rank = L.dispatch_layout(topk_idx, E, R)
                k = topk_idx.shape[1]
            elif is_token_in_rank is not None:
                E, k = num_experts or R, 0
            else:
                raise self._err("dispatch", "needs topk_idx (with the layout) or a cached handle")
            in_rank = is_token_in_rank.cpu().bool()
        if in_rank.shape != (T, R):
            raise self._err("dispatch", f"is_token_in_rank must be [{T}, {R}], got {tuple(in_rank.shape)}")
        if E // R > self.max_local_experts:
            raise self._err("dispatch", f"{E // R} experts per rank exceed max_local_experts={self.max_local_experts}")
        seq = self._begin(previous_event)
        rec = RecordLayout.of(parts, k)
        ct = self._chunk_tokens(rec.row_bytes)
        send_idx = handle.send_idx if handle is not None else L.send_lists(in_rank)
        counts_row = [int(s.numel()) for s in send_idx]
        expert_counts = None
        if k:
            expert_counts = num_tokens_per_expert.cpu().long().view(R, E // R)
        rows = self._header(op, E, H, dtype_code(me, "dispatch", parts), k, rec.row_bytes, ct, counts_row,
                            expert_counts)
        got, counts = self._agree(seq, op, rows)
        if handle is not None and counts != handle.counts:
            raise MismatchError(f"rank {me}: moe.dispatch: the ranks' cached handles describe different layouts")
        plan = L.Plan(me, R, counts, send_idx)

        landing = self.wire.ensure_landing("dispatch", max(sum(counts[s][d] for s in range(R)) for d in range(R))
                                           * rec.row_bytes)
        staging, _ = self.wire.staging("dispatch", plan.num_sent * rec.row_bytes)
        local_ids = [L.local_topk(topk_idx, topk_weights, d, E // R) if k else (None, None) for d in range(R)]
        for d in range(R):
            seg = rec.rows(staging, plan.send_offset(me, d), plan.sent(d))
            rec.pack(seg, parts, send_idx[d], *local_ids[d])
        self._post_segments(seq, DATA, "dispatch", landing, rec.row_bytes, ct,
                            [(d, plan.send_offset(me, d), plan.sent(d), plan.recv_offset_at(d, me))
                             for d in range(R) if d != me])
        mine = rec.rows(landing.tensor, plan.recv_offset(me), plan.sent(me))
        mine.copy_(rec.rows(staging, plan.send_offset(me, me), plan.sent(me)))

        n = plan.num_recv
        recv_parts = [torch.empty(n, w, dtype=dt) for w, dt in rec.parts_meta]
        recv_ids = torch.empty(n, k, dtype=torch.int64) if k else None
        recv_w = torch.empty(n, k, dtype=torch.float32) if k else None
        per_expert = []
        if k:
            per_expert = got[:, _COUNTS + R:_COUNTS + R + E // R].sum(0).tolist()
            per_expert = [L.align_up(int(c), expert_alignment) for c in per_expert]

        def finish() -> None:
            expected = {s: _chunks(plan.received(s), ct) for s in range(R) if s != me}
            self._receive(seq, DATA, expected, op, lambda s, c: None)
            landed = rec.rows(landing.tensor, 0, n)
            for i, p in enumerate(recv_parts):
                p.copy_(rec.part(landed, i))
            if k:
                recv_ids.copy_(rec.ids(landed))
                recv_w.copy_(rec.weights(landed))
            self.wire.drain()

        event = self._finish(finish, async_finish)
        out_parts = [p.to(device) for p in recv_parts]
        recv_x = tuple(out_parts) if isinstance(x, (tuple, list)) else out_parts[0]
        if device.type != "cpu" and async_finish:
            event.current_stream_wait()  # the copy to the device needs the data
            recv_x = tuple(p.to(device) for p in recv_parts) if isinstance(x, (tuple, list)) else \
                recv_parts[0].to(device)
        if handle is not None:
            return recv_x, None, None, None, None, event
        new_handle = Handle(counts, send_idx, in_rank, T, E, per_expert)
        to = (lambda t: None if t is None else t.to(device))
        return recv_x, to(recv_ids), to(recv_w), per_expert, new_handle, event

    # -- combine ----------------------------------------------------------------------------
    def combine(self, x: torch.Tensor, handle: Handle, topk_weights=None, previous_event=None,
                async_finish: bool = False, allocate_on_comm_stream: bool = False, _op: str = "combine"):
        """Sends each received row back to its origin, which sums the rows of the ranks that
        held the token. Returns (combined_x [T, H], combined_topk_weights or None, event)."""
        parts = check_payload(self.rank, "combine", x)
        device = x.device
        R, me = self.group_size, self.rank
        plan = L.Plan(me, R, handle.counts, handle.send_idx)
        n, H = parts[0].shape
        if n != plan.num_recv:
            raise self._err("combine", f"x has {n} rows, the handle's dispatch received {plan.num_recv}")
        k = 0 if topk_weights is None else topk_weights.shape[1]
        seq = self._begin(previous_event)
        rec = RecordLayout.of(parts, k, ids=False)
        ct = self._chunk_tokens(rec.row_bytes)
        rows = self._header(_op, handle.num_experts, H, dtype_code(me, "combine", parts), k, rec.row_bytes,
                            ct, handle.counts[me])
        _, counts = self._agree(seq, _op, rows)
        if counts != handle.counts:
            raise MismatchError(f"rank {me}: moe.combine: the ranks' handles come from different dispatches")
        landing = self.wire.ensure_landing("combine", max(sum(r) for r in counts) * rec.row_bytes)
        staging, _ = self.wire.staging("combine", n * rec.row_bytes)
        all_rows = rec.rows(staging, 0, n)
        rec.part(all_rows, 0).copy_(parts[0])
        if k:
            rec.weights(all_rows).copy_(topk_weights.detach().cpu().float())
        self._post_segments(seq, RESULT, "combine", landing, rec.row_bytes, ct,
                            [(s, plan.recv_offset(s), plan.received(s), plan.send_offset(s, me))
                             for s in range(R) if s != me])
        T = handle.num_tokens
        acc = torch.zeros(T, H, dtype=torch.float32)
        acc_w = torch.zeros(T, k, dtype=torch.float32) if k else None

        def reduce(d: int, rows_: torch.Tensor, chunk: int) -> None:
            idx = handle.send_idx[d][chunk * ct: chunk * ct + rows_.shape[0]]
            acc.index_add_(0, idx, rec.part(rows_, 0).float())
            if k:
                acc_w.index_add_(0, idx, rec.weights(rows_))

        own = rec.rows(staging, plan.recv_offset(me), plan.received(me))
        for c in range(_chunks(plan.sent(me), ct)):
            reduce(me, own[c * ct:(c + 1) * ct], c)

        def landed(d: int, c: int) -> None:
            start = plan.send_offset(me, d) + c * ct
            reduce(d, rec.rows(landing.tensor, start, min(ct, plan.sent(d) - c * ct)), c)

        combined = torch.empty(T, H, dtype=parts[0].dtype)
        combined_w = torch.empty(T, k, dtype=torch.float32) if k else None

        def finish() -> None:
            expected = {d: _chunks(plan.sent(d), ct) for d in range(R) if d != me}
            self._receive(seq, RESULT, expected, _op, landed)
            combined.copy_(acc)
            if k:
                combined_w.copy_(acc_w)
            self.wire.drain()

        event = self._finish(finish, async_finish)
        if device.type != "cpu":
            event.current_stream_wait()
            event = EventOverlap()
        return combined.to(device), None if combined_w is None else combined_w.to(device), event

    # -- fused ------------------------------------------------------------------------------
    def dispatch_compute_combine(self, x: torch.Tensor, topk_idx: torch.Tensor, topk_weights: torch.Tensor,
                                 expert_fn: Callable[[int, torch.Tensor], torch.Tensor],
                                 num_experts: int, previous_event=None, keep_received: bool = False):
        """out[t] = sum_j topk_weights[t, j] * expert_fn(topk_idx[t, j] - first local expert of its
        rank, x[t]) over the token's valid experts, computed where the experts live.

        Each local expert runs once over all its rows, as soon as every source's rows for it
        have landed (rows travel sorted by expert), while later rows are still on the wire; each
        row's result goes home as soon as its last expert ran, and the origin adds results up
        as they arrive (fused.py). Our own tokens are computed alone while a peer's header is late.
        Over shared memory (fused_path="auto") it is dispatch -> experts -> combine instead.
        `expert_fn(local_expert, tokens [n, H]) -> [n, H]` (any float dtype; accumulated in fp32).
        With keep_received, also returns what autograd's backward needs: (out, saved)."""
        op = "dispatch_compute_combine"
        parts = check_payload(self.rank, op, x)
        if len(parts) != 1:
            raise self._err(op, "takes one payload tensor")
        xs = parts[0]
        T, H = xs.shape
        R, me = self.group_size, self.rank
        topk_idx = topk_idx.cpu()
        L.check_topk(me, op, topk_idx, num_experts, R)
        if topk_idx.shape[0] != T or topk_weights.shape != topk_idx.shape:
            raise self._err(op, f"x, topk_idx and topk_weights disagree: {T} tokens, "
                                f"{tuple(topk_idx.shape)}, {tuple(topk_weights.shape)}")
        topk_weights = topk_weights.detach().cpu().float()
        self.last_path = self._fused_path
        if self._fused_path[0] == "sequential":
            got = self._sequential(xs, topk_idx, topk_weights, expert_fn, num_experts, previous_event, keep_received)
        else:
            with _niced(self.compute_nice):
                got = fused.run(self, xs, topk_idx, topk_weights, expert_fn, num_experts, previous_event,
                                keep_received)
        if keep_received:
            return got[0].to(x.device), got[1]
        return got.to(x.device)

    def _sequential(self, xs, topk_idx, topk_weights, expert_fn, num_experts: int, previous_event,
                    keep_received: bool):
        """dispatch_compute_combine as dispatch -> experts -> combine (each expert's weights pass
        once, as in the pipelined schedule; nothing waits on a late peer but the exchanges)."""
        op = "dispatch_compute_combine"
        self.trace, self.trace_steps, self.trace_start = [], [], time.monotonic()
        recv_x, recv_ids, recv_w, _, handle, _ = self.dispatch(
            xs, topk_idx=topk_idx, topk_weights=topk_weights, num_experts=num_experts,
            previous_event=previous_event, _op=f"{op} (dispatch)")
        y = weighted_experts(expert_fn, recv_x, recv_ids, recv_w).to(xs.dtype)
        out = self.combine(y, handle, _op=f"{op} (combine)")[0]
        if not keep_received:
            return out
        plan = L.Plan(self.rank, self.group_size, handle.counts, handle.send_idx)
        rec = RecordLayout.of([xs], topk_idx.shape[1])
        rows = torch.empty(plan.num_recv, rec.row_bytes, dtype=torch.uint8)
        rec.pack(rows, [recv_x], torch.arange(plan.num_recv), recv_ids, recv_w)
        by_source = {s: rows[plan.recv_offset(s):plan.recv_offset(s) + plan.received(s)]
                     for s in range(self.group_size)}
        return out, fused.Saved(plan, rec, by_source)

    def _header_expert_counts(self, headers: torch.Tensor) -> torch.Tensor:
        """The per-expert counts field of exchanged headers: [source, max_local_experts]."""
        return headers[:, _COUNTS + self.group_size:]


@contextlib.contextmanager
def _niced(nice: int):
    """This thread (only: Linux nice values are per thread) at `nice` for the block."""
    if not nice:
        yield
        return
    tid = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, tid)
    os.setpriority(os.PRIO_PROCESS, tid, before + nice)
    try:
        yield
    finally:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, before)
        except PermissionError:  # unprivileged: a thread may not lower its nice value again
            pass
