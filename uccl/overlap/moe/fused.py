"""Buffer.dispatch_compute_combine's schedule: each local expert runs once, over all of its
rows, as soon as every source's rows for it have landed; results go home in runs of rows as
soon as their last expert ran.

Why expert by expert and not chunk by chunk: on CPUs an expert's cost is mostly streaming
its weights through memory (a product of a few rows with [H, F] weights reads H*F floats for
little arithmetic), so computing each landed chunk, or each batch of chunks, re-reads every
local expert's weights per batch; measured on the fabric that cost more than the wire time
it hid. Here the weights pass through memory once per call, as in the sequential path, and
the overlap comes from order:

- the sender packs its rows for each destination sorted by (lowest, highest) local expert of
  the token there, and posts chunks round-robin over destinations, so the rows of every
  destination's first experts land first;
- the headers carry, per destination, how many rows have each lowest expert; so a receiver
  knows that every row using expert e has landed once each source's prefix up to its last row
  whose lowest expert is <= e has, and runs expert e then, while later rows are on the wire;
- a row's result is final once its highest local expert ran; by the sort such rows form runs,
  each written home at once (the immediate names the run's first row, the completion's length
  its size) and added into the output at the origin as it lands.

When peers' headers are late (a straggler), the own tokens are computed alone in the meantime
(one more pass over the weights, paid only while there is nothing else to do).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from uccl.errors import MismatchError, UcclTimeoutError
from uccl.overlap.moe import layout as L
from uccl.overlap.moe.records import RecordLayout, dtype_code
from uccl.overlap.moe.wire import DATA, RESULT, imm_of, split_imm

_OP = "dispatch_compute_combine"
_MAX_ROWS = 1 << 22  # a row index must fit the immediate's payload


def _chunks(n: int, ct: int) -> int:
    return (n + ct - 1) // ct


def _runs(rows: torch.Tensor, most: int) -> list:
    """Sorted row indices as (first, count) runs of consecutive rows, each at most `most` long."""
    if not rows.numel():
        return []
    breaks = ((rows[1:] - rows[:-1]) != 1).nonzero().flatten() + 1
    bounds = [0] + breaks.tolist() + [rows.numel()]
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        first, n = int(rows[a]), b - a
        out += [(first + i, min(most, n - i)) for i in range(0, n, most)]
    return out


def _send_order(topk_idx, topk_weights, in_rank, R: int, E_loc: int):
    """Per destination: token indices sorted by (lowest, highest) local expert there, the
    local ids and weights, and how many of the rows have each lowest expert."""
    send_idx, local, lowest = [], [], []
    for d in range(R):
        ids, w = L.local_topk(topk_idx, topk_weights, d, E_loc)
        idx = in_rank[:, d].nonzero().flatten()
        mine = ids[idx]
        lo = torch.where(mine >= 0, mine, torch.full_like(mine, E_loc)).min(1).values if idx.numel() else idx
        hi = mine.max(1).values if idx.numel() else idx
        order = torch.argsort(lo * E_loc + hi, stable=True)
        send_idx.append(idx[order])
        local.append((ids, w))
        lowest.append(torch.bincount(lo, minlength=E_loc)[:E_loc])
    return send_idx, local, torch.stack(lowest)


def run(buf, xs: torch.Tensor, topk_idx: torch.Tensor, topk_weights: torch.Tensor, expert_fn,
        num_experts: int, previous_event, keep_received: bool):
    """The fused call on `buf` (a Buffer); see Buffer.dispatch_compute_combine."""
    wire = buf.wire
    T, H = xs.shape
    R, me = buf.group_size, buf.rank
    E_loc = num_experts // R
    k = topk_idx.shape[1]
    if E_loc > buf.max_local_experts:
        raise buf._err(_OP, f"{E_loc} experts per rank exceed max_local_experts={buf.max_local_experts}")
    if T >= _MAX_ROWS:
        raise buf._err(_OP, f"{T} tokens exceed the {_MAX_ROWS - 1} a call can address")
    seq = buf._begin(previous_event)
    trace = buf.trace = []
    steps = buf.trace_steps = []
    start = buf.trace_start = time.monotonic()
    deadline = start + wire.timeout
    rec = RecordLayout.of([xs], k)
    res_rec = RecordLayout([(H, xs.dtype)], 0)
    rb, res_rb = rec.row_bytes, res_rec.row_bytes
    ct = buf._chunk_tokens(rb)
    slice_rows = buf.max_batch_chunks * ct or _MAX_ROWS

    _, _, in_rank = L.dispatch_layout(topk_idx, num_experts, R)
    send_idx, local, lowest = _send_order(topk_idx, topk_weights, in_rank, R, E_loc)
    counts_row = [int(s.numel()) for s in send_idx]
    header = buf._header(_OP, num_experts, H, dtype_code(me, _OP, [xs]), k, rb, ct, counts_row, lowest)
    buf._agree(seq, _OP, header, post_only=True)

    offsets = [sum(counts_row[:d]) for d in range(R)]
    staging, _ = wire.staging("dispatch", sum(counts_row) * rb)
    for d in range(R):
        rec.pack(rec.rows(staging, offsets[d], counts_row[d]), [xs], send_idx[d], *local[d])
    own = rec.rows(staging, offsets[me], counts_row[me])
    acc = torch.zeros(T, H, dtype=torch.float32)
    next_e = {me: 0}  # per source: the next expert to run over its rows (all earlier ones ran)

    def step(e: int, sources: dict) -> None:
        """Runs expert e over its rows among sources {rank: (rows, how many of them to look at)};
        peers' rows first (their results travel), in slices of at most slice_rows rows."""
        t0 = time.monotonic()
        todo = []  # (source, rows, row indices using e, [row, slot] mask)
        for s in sorted(sources, key=lambda s_: s_ == me):
            rows, n = sources[s]
            mask = rec.ids(rows[:n]) == e
            used = mask.any(1).nonzero().flatten()
            for a in range(0, used.numel(), slice_rows):
                todo.append((s, rows, used[a:a + slice_rows], mask))
        total = 0
        while todo:
            group, room = [], slice_rows
            while todo and room > 0:
                s, rows, used, mask = todo.pop(0)
                if used.numel() > room:
                    todo.insert(0, (s, rows, used[room:], mask))
                    used = used[:room]
                group.append((s, rows, used, mask))
                room -= used.numel()
            xs_, ws_, where = [], [], []
            for s, rows, used, mask in group:
                i, slot = mask[used].nonzero(as_tuple=True)
                j = used[i]
                xs_.append(rec.part(rows, 0).index_select(0, j))
                ws_.append(rec.weights(rows)[j, slot])
                where.append((s, rows, used, j))
            y = expert_fn(e, xs_[0] if len(xs_) == 1 else torch.cat(xs_)).float()
            y.mul_(torch.cat(ws_).unsqueeze(1))
            at = 0
            for s, rows, used, j in where:
                part = y[at:at + j.numel()]
                at += j.numel()
                total += j.numel()
                if s == me:
                    acc.index_add_(0, send_idx[me].index_select(0, j), part)
                else:
                    partial[s].index_add_(0, j, part)
                    final = used[rec.ids(rows).index_select(0, used).max(1).values == e]
                    send_results(s, final)
                trace.append(("computed", s, e, time.monotonic()))
        steps.append((e, total, t0, time.monotonic()))

    def send_results(s: int, final: torch.Tensor) -> None:
        base = plan.recv_offset(s)
        for first, n in _runs(final, ct):
            res_rec.part(res_rec.rows(res_staging, base + first, n), 0).copy_(partial[s][first:first + n])
            wire.write(s, "results", ret, length=n * res_rb, offset=(base + first) * res_rb,
                       remote_offset=(plan.send_offset(s, me) + first) * res_rb, imm=imm_of(seq, RESULT, first))

    # Headers; while a peer's is late, our own tokens are computed alone.
    headers = None
    while headers is None:
        if wire.headers_ready(seq):
            headers = buf._check_headers(_OP, header[0], wire.headers_in[seq & 1].clone())
        elif time.monotonic() - start >= buf.header_grace and next_e[me] < E_loc:
            step(next_e[me], {me: (own, counts_row[me])})
            next_e[me] += 1
        else:
            until = deadline if next_e[me] == E_loc else min(deadline, start + buf.header_grace)
            try:
                wire.wait_for_headers(until, lambda: f"moe.{_OP}")
            except UcclTimeoutError:
                if time.monotonic() >= deadline:
                    raise
    got, counts = headers
    plan = L.Plan(me, R, counts, send_idx)
    by_expert = buf._header_expert_counts(got)
    prefix = {}  # source -> rows that hold every row using experts <= e, per e
    for s in range(R):
        if s != me:
            prefix[s] = by_expert[s, :E_loc].cumsum(0).tolist()
            if prefix[s][-1] != plan.received(s):
                wire.drain()
                raise MismatchError(f"rank {me}: moe.{_OP}: rank {s}'s header announces {plan.received(s)} rows "
                                    f"but {prefix[s][-1]} by expert")
    land = wire.ensure_landing("dispatch", max(sum(counts[s][d] for s in range(R)) for d in range(R)) * rb)
    ret = wire.ensure_landing("combine", max(sum(r) for r in counts) * res_rb)
    res_staging, _ = wire.staging("results", plan.num_recv * res_rb)

    # Our rows, chunk c to every destination before chunk c + 1 to any.
    peers = [d for d in range(R) if d != me]
    for c in range(max([_chunks(counts_row[d], ct) for d in peers], default=0)):
        for d in peers:
            n = min(ct, counts_row[d] - c * ct)
            if n > 0:
                wire.write(d, "dispatch", land, length=n * rb, offset=(offsets[d] + c * ct) * rb,
                           remote_offset=(plan.recv_offset_at(d, me) + c * ct) * rb, imm=imm_of(seq, DATA, c))
    trace.append(("posted", me, -1, time.monotonic()))

    src_rows = {s: rec.rows(land.tensor, plan.recv_offset(s), plan.received(s)) for s in peers}
    partial = {s: torch.zeros(plan.received(s), H, dtype=torch.float32) for s in peers}
    landed = {s: [False] * _chunks(plan.received(s), ct) for s in peers}
    ready_rows = {s: 0 for s in peers}  # rows of s landed without a gap
    next_e.update({s: 0 for s in peers})
    back = {d: plan.sent(d) for d in peers}  # result rows still to come home

    def take() -> None:
        for c in wire.take(seq, (DATA, RESULT)):
            _, kind, payload = split_imm(c.imm)
            if kind == DATA:
                marks = landed[c.peer]
                marks[payload] = True
                done = ready_rows[c.peer] // ct
                while done < len(marks) and marks[done]:
                    done += 1
                ready_rows[c.peer] = min(done * ct, plan.received(c.peer))
                trace.append(("landed", c.peer, payload, time.monotonic()))
            else:
                n = c.len // res_rb
                got_ = res_rec.part(res_rec.rows(ret.tensor, plan.send_offset(me, c.peer) + payload, n), 0)
                acc.index_add_(0, send_idx[c.peer][payload:payload + n], got_.float())
                back[c.peer] -= n
                trace.append(("reduced", c.peer, payload, time.monotonic()))

    # Expert e runs over every source whose rows for it have landed and whose earlier experts
    # ran. A source whose rows lag (flows do not share the wire evenly) is waited for at most
    # buf.lag_wait seconds; then the others go on, and its rows get their own (extra) runs later.
    blocked_since: dict = {}
    while min(next_e.values()) < E_loc or any(back.values()):
        take()
        now = time.monotonic()
        go = None
        for e in sorted({n for n in next_e.values() if n < E_loc}):
            group = [s for s, n in next_e.items() if n == e]
            ready = [s for s in group if s == me or ready_rows[s] >= prefix[s][e]]
            if len(ready) == len(group) or (any(s != me for s in ready) and
                                            now - blocked_since.setdefault(e, now) >= buf.lag_wait):
                go = e, ready
                break
        if go is not None:
            e, ready = go
            step(e, {s: (own, counts_row[me]) if s == me else (src_rows[s], prefix[s][e]) for s in ready})
            for s in ready:
                next_e[s] += 1
            blocked_since.pop(e, None)
            continue
        if min(next_e.values()) < E_loc or any(back.values()):
            until = min([deadline] + [t + buf.lag_wait for t in blocked_since.values()])
            try:
                wire.wait_any(until, lambda: f"moe.{_OP}: still waiting for rows (landed/needed per source: "
                                             f"{ {s: (ready_rows[s], prefix[s][min(next_e[s], E_loc - 1)]) for s in peers} }) "
                                             f"and result rows {back} (source: rows left)")
            except UcclTimeoutError:
                if time.monotonic() >= deadline:
                    raise
    wire.drain()
    out = acc.to(xs.dtype)
    if keep_received:
        return out, Saved(plan, rec, {**{s: src_rows[s].clone() for s in peers}, me: own.clone()})
    return out


@dataclass
class Saved:
    """The received rows of a fused call (per source), for recomputing the experts in backward."""

    plan: L.Plan
    rec: RecordLayout
    rows: dict

    def received(self) -> torch.Tensor:
        """All received records in dispatch order (sources in rank order, each in its send order)."""
        segs = [self.rows[s] for s in range(self.plan.world)]
        return torch.cat(segs) if segs else torch.empty(0, self.rec.row_bytes, dtype=torch.uint8)
