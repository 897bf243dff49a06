"""The MoE buffer's transport: a dedicated Endpoint, headers exchanged through a small
double-buffered region, payload regions that peers write into at agreed offsets, and a
demultiplexer of write-with-immediate completions by operation.

Why a dedicated Endpoint (not the group communicator's): the collectives of the group
post and consume their own writes-with-immediate on their endpoint; MoE completions
arriving there would have to be told apart from theirs, and a collective waiting for its
immediate could swallow ours. A second endpoint (bootstrapped over the group's store) has
its own completion queue, keys and regions; the price is one more set of channel
connections per Buffer, which is why a program should keep one Buffer per group.

Immediate (32 bits): sequence number of the operation (8 bits) | kind (2 bits) | payload
(22 bits: a chunk index, or an expert and a count in low-latency mode). Every rank runs the
operations of a Buffer in the same order, and no rank gets more than one operation ahead
(each starts with an all-to-all of headers), so 8 bits of sequence cannot wrap into a
stale completion.
"""

from __future__ import annotations

import pickle
import time
from collections import defaultdict
from typing import Callable, Optional

import torch

from uccl.config import Config
from uccl.errors import UcclTimeoutError
from uccl.transport.endpoint import ANY_SOURCE, Endpoint

HEADER, DATA, RESULT, LOW_LATENCY = 0, 1, 2, 3
_PAYLOAD_BITS = 22
_MIN_REGION = 1 << 16


def imm_of(seq: int, kind: int, payload: int) -> int:
    return ((seq & 0xFF) << 24) | (kind << _PAYLOAD_BITS) | payload


def split_imm(imm: int) -> tuple:
    return imm >> 24, (imm >> _PAYLOAD_BITS) & 3, imm & ((1 << _PAYLOAD_BITS) - 1)


class Landing:
    """A registered region peers write into; its capacity is the same on every rank
    (grown together), so a writer knows every receiver's bound."""

    def __init__(self) -> None:
        self.tensor = torch.empty(0, dtype=torch.uint8)
        self.region = None
        self.capacity = 0
        self.keys: list = []
        self.in_arena = False  # in the endpoint's shared arena (same-host peers write with memcpy)


class Wire:
    def __init__(self, bootstrap, config: Optional[Config], header_ints: int) -> None:
        self.bootstrap = bootstrap
        self.config = config or Config.from_env()
        self.ep = Endpoint(bootstrap, self.config)
        self.rank, self.world = self.ep.rank, self.ep.world_size
        self.timeout = self.config.timeout
        self.header_ints = header_ints
        # headers: [parity, source rank, header]; what we send: [parity, destination, header]
        self.headers_in = torch.zeros(2, self.world, header_ints, dtype=torch.int64)
        self.headers_out = torch.zeros(2, self.world, header_ints, dtype=torch.int64)
        self._hin = self.ep.register(self.headers_in, "w")
        self._hout = self.ep.register(self.headers_out, "")
        self._header_keys = [pickle.loads(b) for b in bootstrap.allgather(pickle.dumps(self._hin.key))]
        self.landings: dict = defaultdict(Landing)
        self._staging: dict = {}
        self._stash: dict = defaultdict(list)  # sequence number -> completions that arrived early
        self._inflight: list = []

    # -- regions -----------------------------------------------------------------------
    def ensure_landing(self, name: str, need_bytes: int, shared: bool = False) -> Landing:
        """Grows the landing region `name` to hold `need_bytes`. Every rank calls this with the
        same need (the maximum over ranks, computed from the exchanged headers), so the
        decision to grow, and the key exchange that follows, happen everywhere together.
        `shared`: place it in the endpoint's shared arena where it fits (same-host peers then
        write with memcpy, not a system call per write)."""
        land = self.landings[name]
        if need_bytes <= land.capacity and land.region is not None:
            return land
        cap = max(_MIN_REGION, 1 << max(0, need_bytes - 1).bit_length())
        if land.region is not None:
            land.region.deregister()
        # Give the old block back first (the arena then has room for the grown one); nothing
        # lands in it any more: every peer finished writing before this call, and learns
        # the new key only below.
        land.tensor, land.region, land.in_arena = torch.empty(0, dtype=torch.uint8), None, False
        block = self.ep.alloc_shared(cap) if shared else None
        land.tensor = torch.empty(cap, dtype=torch.uint8) if block is None else torch.frombuffer(block, dtype=torch.uint8)
        land.region = self.ep.register(land.tensor, "w")
        land.capacity = cap
        land.in_arena = block is not None
        land.keys = [pickle.loads(b) for b in self.bootstrap.allgather(pickle.dumps(land.region.key))]
        return land

    def staging(self, name: str, nbytes: int):
        """A local registered buffer of at least `nbytes` (the source of our writes)."""
        tensor, region = self._staging.get(name, (None, None))
        if tensor is None or tensor.numel() < nbytes:
            if region is not None:
                region.deregister()
            tensor = torch.empty(max(_MIN_REGION, 1 << max(0, nbytes - 1).bit_length()), dtype=torch.uint8)
            region = self.ep.register(tensor, "")
            self._staging[name] = (tensor, region)
        return tensor, region

    # -- headers -----------------------------------------------------------------------
    def exchange_headers(self, seq: int, rows: torch.Tensor, what: Callable[[], str]) -> torch.Tensor:
        """rows[d] goes to rank d; returns [source, header] for this operation."""
        self.post_headers(seq, rows)
        return self.wait_headers(seq, what)

    def post_headers(self, seq: int, rows: torch.Tensor) -> None:
        parity = seq & 1
        out = self.headers_out[parity]
        out.copy_(rows)
        hb = self.header_ints * 8
        base = parity * self.world * hb
        for d in range(self.world):
            if d == self.rank:
                self.headers_in[parity, d].copy_(rows[d])
                continue
            self._inflight.append(self.ep.write(d, self._hout, self._header_keys[d], length=hb,
                                                offset=base + d * hb, remote_offset=base + self.rank * hb,
                                                imm=imm_of(seq, HEADER, 0)))
        self._headers_seen = {self.rank}

    def headers_ready(self, seq: int) -> bool:
        for c in self.take(seq, kinds=(HEADER,), block=False):
            self._headers_seen.add(c.peer)
        return len(self._headers_seen) == self.world

    def wait_headers(self, seq: int, what: Callable[[], str]) -> torch.Tensor:
        deadline = time.monotonic() + self.timeout
        while not self.headers_ready(seq):
            self.wait_for_headers(deadline, what)
        return self.headers_in[seq & 1].clone()

    def wait_for_headers(self, deadline: float, what: Callable[[], str]) -> None:
        """Waits for one more completion; on timeout names the ranks whose header is missing."""
        missing = sorted(set(range(self.world)) - self._headers_seen)
        self.wait_any(deadline, lambda: f"{what()}: no header from ranks {missing} "
                                        f"(did they call the same operation?)")

    # -- payload -----------------------------------------------------------------------
    def write(self, dest: int, staging_name: str, landing: Landing, *, length: int, offset: int,
              remote_offset: int, imm: int) -> None:
        _, region = self._staging[staging_name]
        self._inflight.append(self.ep.write(dest, region, landing.keys[dest], length=length, offset=offset,
                                            remote_offset=remote_offset, imm=imm))

    def take(self, seq: int, kinds: tuple, block: bool = False) -> list:
        """Completions of operation `seq` of the given kinds that have arrived (without waiting)."""
        for c in self.ep.poll(256):
            self._stash[c.imm >> 24].append(c)
        bucket = self._stash.get(seq & 0xFF, [])
        got = [c for c in bucket if split_imm(c.imm)[1] in kinds]
        if got:
            self._stash[seq & 0xFF] = [c for c in bucket if split_imm(c.imm)[1] not in kinds]
        return got

    def wait_any(self, deadline: float, what: Callable[[], str]) -> None:
        """Blocks (GIL released) until one more completion arrives, for any operation."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise UcclTimeoutError(f"rank {self.rank}: {what()} (waited {self.timeout:.1f} s)")
        try:
            c = self.ep.wait_remote_write(ANY_SOURCE, left)
        except UcclTimeoutError as exc:
            raise UcclTimeoutError(f"rank {self.rank}: {what()} (waited {self.timeout:.1f} s)") from exc
        self._stash[c.imm >> 24].append(c)

    def drain(self) -> None:
        """Waits for our own posted writes (so their sources may be reused)."""
        inflight, self._inflight = self._inflight, []
        for req in inflight:
            req.wait(self.timeout)

    def close(self) -> None:
        self.ep.close()
