"""Pieces between ranks of a uccl group: tagged messages on the group's endpoint.

Each op call takes the next sequence number of its group (every rank calls the group's
ops in the same order, so the numbers agree) and tags each piece with (sequence, piece),
in a tag range of its own: the backend's user tags stay below 2**62, its monitored
barrier just above. Receives are posted before anything is sent, so a piece lands in
place; on the net channel the engine thread moves it while torch computes here.
(Tagged messages rather than writes-with-immediate: the collectives drain every
remote-write event of the endpoint, and a TP op may run beside an async collective.)
"""

from __future__ import annotations

import itertools

import torch

from uccl.errors import UcclError

TAG_BASE = 0x6 << 60
_PIECE_BITS = 20


def _bytes(t: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor's memory as uint8 (any dtype, bfloat16 included)."""
    return t.reshape(-1).view(torch.uint8)


class Exchange:
    """The pieces of one op call on one group."""

    def __init__(self, pg, op: str) -> None:
        counter = pg.__dict__.setdefault("_uccl_tp_seq", itertools.count())
        self.seq = next(counter) & 0xFFFFFFFF
        self.ep = pg.communicator.endpoint
        self.rank, self.world = self.ep.rank, self.ep.world_size
        self.timeout = float(pg._timeout)
        self.op = op
        self._sends: list = []

    def _tag(self, piece: int) -> int:
        if piece >= 1 << _PIECE_BITS:
            raise ValueError(f"rank {self.rank}: {self.op}: too many pieces ({piece})")
        return TAG_BASE | (self.seq << _PIECE_BITS) | piece

    def recv(self, src: int, buf: torch.Tensor, piece: int):
        """Posts the receive of `piece` from `src` into the contiguous `buf`."""
        return (self.ep.recv(src, _bytes(buf), self._tag(piece)), src, piece, buf)

    def send(self, dst: int, buf: torch.Tensor, piece: int) -> None:
        """Sends the contiguous `buf` as `piece` to `dst` (completion collected by finish())."""
        self._sends.append((self.ep.send(dst, _bytes(buf), self._tag(piece)), dst, piece, buf))

    def ready(self, posted) -> bool:
        """Whether a posted receive has landed (never blocks)."""
        return posted[0].test()

    def wait(self, posted) -> torch.Tensor:
        """Waits for a posted receive; returns its buffer."""
        req, src, piece, buf = posted
        try:
            c = req.wait(self.timeout)
        except UcclError as exc:
            raise type(exc)(f"rank {self.rank}: {self.op}: piece {piece} from rank {src}: {exc}") from exc
        if c.len != buf.numel() * buf.element_size():
            raise RuntimeError(f"rank {self.rank}: {self.op}: piece {piece} from rank {src} has {c.len} bytes, "
                               f"expected {buf.numel() * buf.element_size()} (ranks called it with different shapes)")
        return buf

    def finish(self) -> None:
        """Waits until every piece sent has left (its buffer may then be reused)."""
        for req, dst, piece, _ in self._sends:
            try:
                req.wait(self.timeout)
            except UcclError as exc:
                raise type(exc)(f"rank {self.rank}: {self.op}: piece {piece} to rank {dst}: {exc}") from exc
        self._sends.clear()
