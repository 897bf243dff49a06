"""Low-latency mode (DeepEP's shapes), for decoding-sized batches: no header round.

Every rank owns fixed slots in every receiver: [parity, local expert, source rank, max
tokens] rows for dispatch, [parity, expert, max tokens] rows for combine. A sender writes
its tokens for each of a receiver's experts into its slot with one write whose immediate
carries (local expert, token count), so the receiver needs nothing else; each (source,
expert) pair writes every call (a count of 0 too), which is what lets the two parities
stand in for flow control: a rank can only be one call ahead of any peer.

Token tokens go once per (token, expert), not once per rank as in normal mode: that is
what the expert-major receive layout [local experts, max * ranks, hidden] needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from uccl.errors import InvalidArgumentError
from uccl.overlap.moe import layout as L
from uccl.overlap.moe.events import EventOverlap
from uccl.overlap.moe.records import RecordLayout, check_payload
from uccl.overlap.moe.wire import LOW_LATENCY, imm_of, split_imm

_COUNT_BITS = 14
FP8_BLOCK = 128


@dataclass
class LowLatencyHandle:
    counts: list              # [local expert][source]: tokens each source sent each local expert
    positions: torch.Tensor   # [T, k]: our token's row within its expert's block from us (-1: none)
    num_experts: int
    max_tokens: int
    hidden: int


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
        L.check_topk(self.rank, op, topk_idx, E, R)
        if topk_idx.shape[0] != T:
            raise self._err(op, f"topk_idx has {topk_idx.shape[0]} rows, x has {T} tokens")
        if T > M:
            raise self._err(op, f"{T} tokens exceed num_max_dispatch_tokens_per_rank={M}")
        if M >= 1 << _COUNT_BITS or E // R > 256:
            raise self._err(op, f"at most {(1 << _COUNT_BITS) - 1} tokens per rank and 256 experts per rank")

    def _ll_post(self, seq: int, staging: str, landing, blocks: list, row_bytes: int) -> None:
        """blocks: (dest, local expert, first staging row, count, first remote row)."""
        for dest, e, first, n, remote in blocks:
            length = n * row_bytes if n else 8  # a count of 0 still announces itself
            self.wire.write(dest, staging, landing, length=length, offset=first * row_bytes,
                            remote_offset=remote * row_bytes, imm=imm_of(seq, LOW_LATENCY, (e << _COUNT_BITS) | n))

    def _ll_wait(self, seq: int, expected: int, what: str, on_block) -> None:
        import time

        left, deadline = expected, time.monotonic() + self.wire.timeout
        while left:
            got = self.wire.take(seq, (LOW_LATENCY,))
            for c in got:
                payload = split_imm(c.imm)[2]
                on_block(c.peer, payload >> _COUNT_BITS, payload & ((1 << _COUNT_BITS) - 1))
            left -= len(got)
            if left:
                self.wire.wait_any(deadline, lambda: f"moe.{what}: {left} expert blocks still missing "
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
        topk_idx = topk_idx.cpu().long()
        self._ll_check(op, T, topk_idx, M, E)
        if use_fp8 and not hasattr(torch, "float8_e4m3fn"):
            raise self._err(op, "this torch has no float8_e4m3fn")
        seq = self._begin(None)
        parts = list(quantize_fp8(xs)) if use_fp8 else [xs]
        rec = RecordLayout.of(parts, 0, ids=False)
        E_loc, k = E // R, topk_idx.shape[1]
        parity = seq & 1
        # landing rows: [parity][local expert][source][M]
        landing = self.wire.ensure_landing("ll_dispatch", 2 * E_loc * R * M * rec.row_bytes)
        # one row per (token, expert), sorted by expert (stable: token order within an expert)
        flat = topk_idx.flatten()
        valid = flat >= 0
        n_rows = int(valid.sum())
        order = torch.argsort(torch.where(valid, flat, E), stable=True)[:n_rows]
        per_expert = torch.bincount(flat[valid], minlength=E)
        starts = torch.cumsum(per_expert, 0) - per_expert
        positions = torch.full((flat.numel(),), -1, dtype=torch.int64)
        positions[order] = torch.arange(n_rows) - starts[flat[order]]
        staging, _ = self.wire.staging("ll_dispatch", max(n_rows, 1) * rec.row_bytes)
        rec.pack(rec.rows(staging, 0, n_rows), parts, order // k)
        pe, st = per_expert.tolist(), starts.tolist()
        blocks = [(e // E_loc, e % E_loc, st[e], pe[e], ((parity * E_loc + e % E_loc) * R + me) * M) for e in range(E)]
        self._ll_post(seq, "ll_dispatch", landing, [b for b in blocks if b[0] != me], rec.row_bytes)
        counts = [[0] * R for _ in range(E_loc)]
        for d, le, first, n, remote in blocks:
            if d == me:  # our own experts: a local copy
                rec.rows(landing.tensor, remote, n).copy_(rec.rows(staging, first, n))
                counts[le][me] = n
        recv_parts = [torch.empty(E_loc, M * R, w, dtype=dt) for w, dt in rec.parts_meta]
        recv_count = torch.zeros(E_loc, dtype=torch.int32)

        def arrived(src: int, le: int, n: int) -> None:
            counts[le][src] = n

        def finish() -> None:
            self._ll_wait(seq, (R - 1) * E_loc, op, arrived)
            src_rows, dst_rows = [], []  # pack each expert's rows, sources in rank order
            for le in range(E_loc):
                at = 0
                for src in range(R):
                    n = counts[le][src]
                    base = ((parity * E_loc + le) * R + src) * M
                    src_rows.extend(range(base, base + n))
                    dst_rows.extend(range(le * M * R + at, le * M * R + at + n))
                    at += n
                recv_count[le] = at
            landed = rec.rows(landing.tensor, 0, 2 * E_loc * R * M)
            src_t, dst_t = torch.tensor(src_rows, dtype=torch.int64), torch.tensor(dst_rows, dtype=torch.int64)
            for i, p in enumerate(recv_parts):
                # as bytes: index_copy_ has no fp8 kernels
                p.view(E_loc * M * R, -1).view(torch.uint8).index_copy_(
                    0, dst_t, rec.part(landed, i).view(torch.uint8).index_select(0, src_t))
            self.wire.drain()

        event = EventOverlap(finish)
        self._pending = event
        hook = event.current_stream_wait
        if not (async_finish or return_recv_hook) or device.type != "cpu":
            event.current_stream_wait()
        handle = LowLatencyHandle(counts, positions.view(topk_idx.shape), E, M, xs.shape[1])
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
        if xs.shape[0] != E_loc or xs.shape[1] < M * R:
            raise self._err(op, f"x must be [{E_loc}, {M * R}, H], got {tuple(xs.shape)}")
        H = xs.shape[2]
        topk_idx = topk_idx.cpu().long()
        T = topk_idx.shape[0]
        seq = self._begin(None)
        rec = RecordLayout([(H, xs.dtype)], 0, ids=False)
        parity = seq & 1
        landing = self.wire.ensure_landing("ll_combine", 2 * E * M * rec.row_bytes)
        blocks, gather, row = [], [], 0
        for le in range(E_loc):
            at = 0
            for src in range(R):
                n = handle.counts[le][src]
                gather.extend(range(le * M * R + at, le * M * R + at + n))
                blocks.append((src, le, row, n, (parity * E + me * E_loc + le) * M))
                row += n
                at += n
        staging, _ = self.wire.staging("ll_combine", max(row, 1) * rec.row_bytes)
        rows_out = rec.rows(staging, 0, row)
        rec.part(rows_out, 0).copy_(xs.view(E_loc * xs.shape[1], H).index_select(0, torch.tensor(gather,
                                                                                                 dtype=torch.int64)))
        self._ll_post(seq, "ll_combine", landing, [b for b in blocks if b[0] != me], rec.row_bytes)
        for src, le, first, n, remote in blocks:
            if src == me:
                rec.rows(landing.tensor, remote, n).copy_(rec.rows(staging, first, n))
        combined = out if out is not None and device.type == "cpu" else torch.empty(T, H, dtype=xs.dtype)

        def finish() -> None:
            self._ll_wait(seq, (R - 1) * E_loc, op, lambda s, le, n: None)
            grid = rec.part(rec.rows(landing.tensor, parity * E * M, E * M), 0).view(E, M, H)
            valid = topk_idx >= 0
            t, j = valid.nonzero(as_tuple=True)
            acc = torch.zeros(T, H, dtype=torch.float32)
            rows = grid[topk_idx[t, j], handle.positions[t, j]].float()
            acc.index_add_(0, t, rows * topk_weights.detach().cpu().float()[t, j].unsqueeze(1))
            combined.copy_(acc)
            self.wire.drain()

        event = EventOverlap(finish)
        self._pending = event
        if not (async_finish or return_recv_hook) or device.type != "cpu":
            event.current_stream_wait()
        return combined.to(device), event, event.current_stream_wait
