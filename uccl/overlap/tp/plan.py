"""The piece plan of a fused TP op: which path runs and in how many pieces.

A deterministic function of the op, its shapes, the world size and the transport, so
every rank takes the same path and posts the same pieces (a per-rank timing tuner that
let ranks disagree would hang the job). UCCL_TP_SPLITS overrides it.

Why these rules:
- shm: a shared-memory copy runs on the caller's core (the channel copies in the posting
  thread), so there is no idle engine to overlap with; the unfused path is never slower.
- loopback (the net channel, every rank on one host): the "wire" is this host's CPU,
  which the GEMMs need too; measured slower fused (perf/results/tp_perf.json).
- except parallel_mlp on one host (shm or loopback): run in token pieces, the whole MLP
  (GEMM, activation, GEMM on a piece's rows) beat the unfused block at every measured
  FFN width, forced to 4 pieces 1.08-1.42x over two runs (tp_perf.json and
  tp_perf_jumbo.json, host and host-net rows, 512 KiB blocks), faster even than the
  compute-only block over all tokens at once: each piece's hidden activations stay small;
  16 pieces were slower again. So it fuses there in ONE_HOST_MLP_PIECES.
- net (ranks on other hosts): the engine thread and the wire move the pieces while torch
  computes; the first piece's wait and the last one's tail stay exposed, so more pieces
  pay until per-piece costs (a message, a smaller GEMM) take over. Measured on the fabric
  (100 Mbit/s, 2 ranks, 512 KiB blocks, perf/results/tp_perf.json's pieces_s): 8 pieces
  were the fastest forced count for the fused block (parallel_mlp) and the two-op block
  at every FFN width with compute near or above the communication, 16 slower again; so a
  piece is PIECE_BYTES = 64 KiB (about 5 ms of a 100 Mbit/s link), at most MAX_PIECES.
- blocks under MIN_BLOCK_BYTES per peer run unfused: 4 ranks with 256 KiB blocks measured
  0.90-1.13x of unfused (inside the test host's noise), not worth the risk.
- all_reduce_rmsnorm: the only work its token split can hide is one half's add+norm,
  about 1% of the all-reduce on a CPU over a 100 Mbit/s link (measured: no gain), while
  it issues four collectives for one; it runs unfused unless UCCL_TP_SPLITS asks.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Optional

from uccl.config import SETTINGS_BY_ENV

PIECE_BYTES = 64 << 10       # target piece size on the net channel
MIN_BLOCK_BYTES = 512 << 10  # per peer block below this: unfused
MAX_PIECES = 8
ONE_HOST_MLP_PIECES = 4


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a TP op did: `path` is "fused" or "unfused"; `pieces` per peer block (0 when unfused)."""

    op: str
    path: str
    pieces: int
    transport: str
    world: int
    block_bytes: int
    reason: str


_last = threading.local()


def last_plan() -> Optional[Plan]:
    """The plan of the last TP op this thread ran (None before the first)."""
    return getattr(_last, "plan", None)


def record(plan: Plan) -> Plan:
    _last.plan = plan
    return plan


def splits_setting() -> int:
    """UCCL_TP_SPLITS, read at each call (validated like every UCCL_* setting)."""
    return SETTINGS_BY_ENV["UCCL_TP_SPLITS"].read()


def make_plan(op: str, *, uccl: bool, cpu: bool, world: int, transport: str, block_bytes: int,
              block_rows: int, splits: Optional[int] = None) -> Plan:
    """The plan for one call. `block_bytes`: what one peer's block moves; `block_rows`: the
    rows a block can be cut into (pieces never exceed it)."""
    splits = splits_setting() if splits is None else splits

    def unfused(reason: str) -> Plan:
        return record(Plan(op, "unfused", 0, transport, world, block_bytes, reason))

    def fused(pieces: int, reason: str) -> Plan:
        return record(Plan(op, "fused", max(1, min(pieces, block_rows)), transport, world, block_bytes, reason))

    if not uccl:
        return unfused("not a uccl group")
    if not cpu:
        return unfused("tensors not on the CPU")
    if world == 1:
        return unfused("world of one")
    if block_rows == 0:
        return unfused("empty block")
    if splits == -1:
        return unfused("UCCL_TP_SPLITS=-1")
    if splits > 0:
        return fused(splits, f"UCCL_TP_SPLITS={splits}")
    if op == "all_reduce_rmsnorm":
        return unfused("the add+norm it could hide is small beside the all-reduce")
    if op == "parallel_mlp" and transport in ("shm", "loopback") and block_bytes >= MIN_BLOCK_BYTES:
        return fused(ONE_HOST_MLP_PIECES, f"{transport}: the MLP in token pieces measured faster on one host")
    if transport == "shm":
        return unfused("shared memory: copies run on the caller's core, nothing to overlap with")
    if transport == "loopback":
        return unfused("net channel within one host: its wire is the CPU the GEMMs use")
    if block_bytes < MIN_BLOCK_BYTES:
        return unfused(f"block of {block_bytes} B < {MIN_BLOCK_BYTES} B")
    pieces = max(1, min(MAX_PIECES, block_bytes // PIECE_BYTES))
    return fused(pieces, f"net channel, {block_bytes} B per block")


def bounds(rows: int, pieces: int) -> list:
    """[(lo, hi)] cutting `rows` into `pieces` near-equal parts (the first ones larger)."""
    base, extra = divmod(rows, pieces)
    out, lo = [], 0
    for i in range(pieces):
        hi = lo + base + (1 if i < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out
