"""Low-latency mode (DeepEP's shapes), for decoding-sized batches: no header round.

Every rank owns one fixed slot per parity in every receiver, and each call writes each peer
exactly once: in dispatch, the counts of the receiver's local experts (rounded up to whole
rows), then their tokens, expert by expert; in combine, the experts' outputs for the tokens
that source sent, in the order it sent them (so it needs no counts). Every (source, receiver)
pair writes every call (with no tokens too), which is what lets the two parities stand in
for flow control: a rank can only be one call ahead of any peer. The landings live in the
endpoint's shared arena where they fit, so a same-host peer's write is one memcpy. One write
per peer, not per expert, because on a host with fewer cores than ranks each write's and
completion's fixed cost is paid in the other ranks' time.

Tokens go once per (token, expert), not once per rank as in normal mode: that is what the
expert-major receive layout [local experts, max * ranks, hidden] needs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from uccl import _native
from uccl.errors import InvalidArgumentError
from uccl.overlap.moe import layout as L
from uccl.overlap.moe.events import EventOverlap
from uccl.overlap.moe.records import RecordLayout, check_payload
from uccl.overlap.moe.wire import LOW_LATENCY, imm_of

_COUNT_BITS = 14
FP8_BLOCK = 128


@dataclass
class LowLatencyHandle:
    counts: list              # [local expert][source]: tokens each source sent each local expert
    positions: torch.Tensor   # [T, k]: our token's row within its expert's block from us (-1: none)
    num_experts: int
    max_tokens: int
    hidden: int
    back: torch.Tensor        # [T, k]: its row in the combine landing's slots ([owner rank][rows]; -1: none)
    starts: list = None       # [local expert][source]: the first row of that source's tokens in recv_x[e]


def quantize_fp8(x: torch.Tensor):
    """Per-128-channel fp8 (e4m3) with float32 scales, as DeepEP's low-latency fp8 path."""
    T, H = x.shape
    if H % FP8_BLOCK:
        raise InvalidArgumentError(f"low_latency_dispatch: fp8 needs hidden % {FP8_BLOCK} == 0, got {H}")
    blocks = x.float().view(T, H // FP8_BLOCK, FP8_BLOCK)
    scale = blocks.abs().amax(-1).clamp(min=1e-4) / 448.0
    q = (blocks / scale.unsqueeze(-1)).view(T, H).to(torch.float8_e4m3fn)
    return q, scale.contiguous()


class LowLatencyMixin:
    def _ll_check(self, op: str, T: int, topk_idx, M: int, E: int) -> None:
        R = self.group_size
        L.check_topk(self.rank, op, topk_idx, E, R, ids=False)  # the ids' range: in native route()
        if topk_idx.shape[0] != T:
            raise self._err(op, f"topk_idx has {topk_idx.shape[0]} rows, x has {T} tokens")
        if T > M:
            raise self._err(op, f"{T} tokens exceed num_max_dispatch_tokens_per_rank={M}")
        if M >= 1 << _COUNT_BITS or E // R > 256:
            raise self._err(op, f"at most {(1 << _COUNT_BITS) - 1} tokens per rank and 256 experts per rank")

    def _ll_post(self, seq: int, staging: str, landing, segments: list, slot_bytes: int) -> None:
        """One write per peer: segments[d] = (staging byte offset, bytes) goes to our slot
        (rank `me`, this call's parity) of rank d's landing. Our own segment the caller packed
        straight into our landing's slot (segments[me] is not used)."""
        me = self.rank
        remote = ((seq & 1) * self.group_size + me) * slot_bytes
        for d, (first, nbytes) in enumerate(segments):
            if d != me:  # an empty segment still announces itself (staging has a spare row for it)
                self.wire.write(d, staging, landing, length=max(nbytes, 8), offset=first, remote_offset=remote,
                                imm=imm_of(seq, LOW_LATENCY, 0))

    def _ll_wait(self, seq: int, what: str) -> None:
        """Until every peer's segment of operation `seq` has landed here."""
        left, deadline = self.group_size - 1, time.monotonic() + self.wire.timeout
        while left:
            left -= len(self.wire.take(seq, (LOW_LATENCY,)))
            if left:
                self.wire.wait_any(deadline, lambda: f"moe.{what}: {left} peers' blocks still missing "
                                                     f"(did every rank call {what}?)")

    def low_latency_dispatch(self, x: torch.Tensor, topk_idx: torch.Tensor, num_max_dispatch_tokens_per_rank: int,
                             num_experts: int, use_fp8: bool = False, async_finish: bool = False,
                             return_recv_hook: bool = False, **_unused):
        """Returns (recv_x [local experts, max * R, H] (with fp8: (values, scales [.., H / 128])),
        recv_count [local experts] int32, handle, event, hook). Rows of recv_x[e] are packed:
        the tokens of source 0, then source 1, ...; recv_count[e] of them are valid."""
        op = "low_latency_dispatch"
        (xs,) = check_payload(self.rank, op, x)
        device = x.device
        T = xs.shape[0]
        R, me, M, E = self.group_size, self.rank, int(num_max_dispatch_tokens_per_rank), int(num_experts)
        topk_idx = topk_idx.cpu().long().contiguous()
        self._ll_check(op, T, topk_idx, M, E)
        if use_fp8 and not hasattr(torch, "float8_e4m3fn"):
            raise self._err(op, "this torch has no float8_e4m3fn")
        E_loc, k = E // R, topk_idx.shape[1]
        # one row per (token, expert), sorted by expert (token order within an expert): native
        # counting sort, which also gives each pair's row here and in combine's landing. Before
        # _begin: a bad topk_idx raises with this Buffer's sequence still in step with the peers.
        per_expert = torch.empty(E, dtype=torch.int64)
        token_of, positions, back = (torch.empty(T * k, dtype=torch.int64) for _ in range(3))
        try:
            n_rows = _native.moe.route(topk_idx.data_ptr(), T, k, E, E_loc, M, per_expert.data_ptr(),
                                       token_of.data_ptr(), positions.data_ptr(), back.data_ptr())
        except InvalidArgumentError as exc:
            raise self._err(op, str(exc)) from None
        seq = self._begin(None)
        parts = list(quantize_fp8(xs)) if use_fp8 else [xs]
        rec = RecordLayout.of(parts, 0, ids=False)
        rb, parity = rec.row_bytes, seq & 1
        # A segment per destination: E_loc int32 counts (rounded up to whole rows), then the rows
        # for its experts, expert by expert. Each source owns one slot per parity at every receiver.
        hdr = -(-4 * E_loc // rb)
        slot = hdr + E_loc * M
        landing = self.wire.ensure_landing("ll_dispatch", 2 * R * slot * rb, shared=True)
        staging, _ = self.wire.staging("ll_dispatch", (R * hdr + max(n_rows, 1)) * rb)
        # per destination: our counts for its experts, then its rows; ours go straight into our
        # own slot of our landing (parity, rank me), the others' into staging, whence one write each
        own = (parity * R + me) * slot * rb
        widths = [p.shape[1] * p.element_size() for p in parts]
        segments = _native.moe.ll_pack([(p.data_ptr(), w, T, col) for p, w, col in zip(parts, widths, rec.part_offsets)],
                                       token_of.data_ptr(), n_rows, per_expert.data_ptr(), R, E_loc, me, hdr, rb,
                                       staging.data_ptr(), staging.numel(), landing.tensor.data_ptr() + own, slot * rb)
        self._ll_post(seq, "ll_dispatch", landing, segments, slot * rb)
        recv_parts = [torch.empty(E_loc, M * R, w, dtype=dt) for w, dt in rec.parts_meta]
        recv_count = torch.empty(E_loc, dtype=torch.int32)
        counts: list = []  # [local expert][source], filled by finish (the handle holds these lists)
        starts: list = []

        def finish() -> None:
            self._ll_wait(seq, op)
            # per expert, the sources' rows in rank order (each source's block for an expert is
            # contiguous in its slot); the counts come from the landed headers
            try:
                c, st = _native.moe.ll_unpack(
                    landing.tensor.data_ptr(), landing.capacity, parity * R * slot, R, E_loc, hdr, slot, rb, M,
                    [(p.data_ptr(), w, col) for p, w, col in zip(recv_parts, widths, rec.part_offsets)],
                    recv_count.data_ptr())
            except InvalidArgumentError as exc:
                raise self._err(op, str(exc)) from None
            counts[:], starts[:] = c, st
            self.wire.drain()

        event = EventOverlap(finish)
        self._pending = event
        hook = event.current_stream_wait
        if not (async_finish or return_recv_hook) or device.type != "cpu":
            event.current_stream_wait()
        handle = LowLatencyHandle(counts, positions.view(topk_idx.shape), E, M, xs.shape[1], back.view(topk_idx.shape),
                                  starts)
        recv_x = tuple(p.to(device) for p in recv_parts) if use_fp8 else recv_parts[0].to(device)
        return recv_x, recv_count.to(device), handle, event, hook

    def low_latency_combine(self, x: torch.Tensor, topk_idx: torch.Tensor, topk_weights: torch.Tensor,
                            handle: LowLatencyHandle, async_finish: bool = False, return_recv_hook: bool = False,
                            out=None, **_unused):
        """x [local experts, max * R, H] (the experts' outputs, rows as dispatched) ->
        (combined_x [T, H] = sum_j topk_weights[t, j] * output of expert topk_idx[t, j], event, hook)."""
        op = "low_latency_combine"
        R, me, M, E = self.group_size, self.rank, handle.max_tokens, handle.num_experts
        E_loc = E // R
        device = x.device
        xs = x.detach().cpu().contiguous()
        if xs.dim() != 3 or xs.shape[0] != E_loc or xs.shape[1] < M * R:
            raise self._err(op, f"x must be [{E_loc}, {M * R}, H], got {tuple(xs.shape)}")
        H, stride = xs.shape[2], xs.shape[1]
        T, k = handle.back.shape
        if tuple(topk_idx.shape) != (T, k) or tuple(topk_weights.shape) != (T, k):
            raise self._err(op, f"topk_idx {tuple(topk_idx.shape)} and topk_weights {tuple(topk_weights.shape)} "
                                f"must be [{T}, {k}] as in the dispatch that made the handle")
        seq = self._begin(None)
        rec = RecordLayout([(H, xs.dtype)], 0, ids=False)
        rb, parity, slot = rec.row_bytes, seq & 1, E_loc * M
        width = H * xs.element_size()
        # the source's segment: its rows for our experts, expert by expert (as it sent them)
        landing = self.wire.ensure_landing("ll_combine", 2 * R * slot * rb, shared=True)
        own = (parity * R + me) * slot  # our rows for our own tokens go straight into our landing's slot
        segs, own_segs, segments, row = [], [], [], 0
        for src in range(R):
            first = row
            for le in range(E_loc):
                n = handle.counts[le][src]
                if n and src == me:
                    own_segs += (le * stride + handle.starts[le][src], own + row - first, n)
                elif n:
                    segs += (le * stride + handle.starts[le][src], row, n)
                row += n
            segments.append((first * rb, (row - first) * rb))
        staging, _ = self.wire.staging("ll_combine", (row + 1) * rb)
        _native.moe.copy_rows(staging.data_ptr(), rb, row + 1, 0, xs.data_ptr(), width, E_loc * stride, 0, width, segs)
        _native.moe.copy_rows(landing.tensor.data_ptr(), rb, 2 * R * slot, 0, xs.data_ptr(), width, E_loc * stride, 0,
                              width, own_segs)
        self._ll_post(seq, "ll_combine", landing, segments, slot * rb)
        combined = out if out is not None and device.type == "cpu" else torch.empty(T, H, dtype=xs.dtype)

        def finish() -> None:
            self._ll_wait(seq, op)
            weights = topk_weights.detach().cpu().float().contiguous()
            if xs.dtype in (torch.float32, torch.bfloat16):  # native: one pass over the landed rows
                direct = combined.dtype == torch.float32 and combined.is_contiguous() and combined.shape == (T, H)
                acc = combined if direct else torch.empty(T, H, dtype=torch.float32)
                _native.moe.weighted_rows(acc.data_ptr(), landing.tensor.data_ptr() + parity * R * slot * rb,
                                          R * slot, rb, xs.dtype == torch.bfloat16, handle.back.data_ptr(),
                                          weights.data_ptr(), T, k, H)
                if not direct:
                    combined.copy_(acc)
            else:
                grid = rec.part(rec.rows(landing.tensor, parity * R * slot, R * slot), 0)
                t, j = (handle.back >= 0).nonzero(as_tuple=True)
                acc = torch.zeros(T, H, dtype=torch.float32)
                acc.index_add_(0, t, grid.index_select(0, handle.back[t, j]).float() * weights[t, j].unsqueeze(1))
                combined.copy_(acc)
            self.wire.drain()

        event = EventOverlap(finish)
        self._pending = event
        if not (async_finish or return_recv_hook) or device.type != "cpu":
            event.current_stream_wait()
        return combined.to(device), event, event.current_stream_wait
