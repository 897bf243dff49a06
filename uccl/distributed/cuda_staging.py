"""Host staging for one operation: what uccl's collectives (host memory, contiguous)
need from the tensors torch passes in.

- CPU, contiguous: used as is (no copy).
- CPU, non-contiguous: copied into a contiguous buffer (inputs) and back (outputs), as
  gloo does for collectives.
- CUDA: pinned host buffers. `stage_in` orders a side stream after the caller's current
  stream (so producers finish first) and enqueues the device-to-host copies there without
  blocking; `wait_in` (on the issuing thread, just before uccl reads host memory) waits for
  that copy only; `stage_out` enqueues the host-to-device copies on the side stream and
  records an event; `sync_consumer` makes the waiter's current stream wait on that event
  (the host never waits for the copies back); `on_copy_stream` is where a CUDA Future is
  completed, so the events it records (and its waiters wait on) follow those copies.
- Lists (gather / scatter / all_to_all lists, ...) are packed into one flat host buffer.
"""

from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import torch

_STREAMS: dict = {}


def _side_stream(device: torch.device):
    s = _STREAMS.get(device)
    if s is None:
        s = _STREAMS[device] = torch.cuda.Stream(device=device)
    return s


class Stage:
    __slots__ = ("device", "pre", "post", "_ev_in", "_ev_out", "_stream")

    def __init__(self, device: Optional[torch.device] = None) -> None:
        self.device = device  # a CUDA device, or None for host tensors
        self.pre: list = []  # (host dst, src) copies before the operation
        self.post: list = []  # (dst, host src) copies after it
        self._ev_in = self._ev_out = self._stream = None

    @classmethod
    def of(cls, tensors: Sequence[torch.Tensor]) -> "Stage":
        for t in tensors:
            if t.device.type == "cuda":
                return cls(t.device)
            if t.device.type != "cpu":
                raise RuntimeError(f"ProcessGroupUCCL: tensors on {t.device} are not supported (cpu, cuda)")
        return cls(None)

    # -- building ---------------------------------------------------------------------------
    def empty(self, shape, dtype: torch.dtype) -> torch.Tensor:
        if self.device is not None:
            return torch.empty(shape, dtype=dtype, pin_memory=True)
        return torch.empty(shape, dtype=dtype)

    def host(self, t: torch.Tensor, read: bool = True, write: bool = False) -> torch.Tensor:
        """A contiguous host tensor standing for t."""
        if self.device is None and t.is_contiguous():
            return t
        h = self.empty(t.shape, t.dtype)
        if read:
            self.pre.append((h, t))
        if write:
            self.post.append((t, h))
        return h

    def pack(self, tensors: Sequence[torch.Tensor], dtype: torch.dtype, read: bool = True,
             write: bool = False) -> torch.Tensor:
        """One flat host buffer holding the tensors back to back."""
        flat = self.empty((sum(t.numel() for t in tensors),), dtype)
        off = 0
        for t in tensors:
            n = t.numel()
            view = flat[off:off + n].view(t.shape)
            if read:
                self.pre.append((view, t))
            if write:
                self.post.append((t, view))
            off += n
        return flat

    @property
    def needs_finish(self) -> bool:
        return bool(self.post) or self.device is not None

    # -- running ----------------------------------------------------------------------------
    def stage_in(self) -> None:
        """On the caller's thread, in call order."""
        if self.device is None:
            for dst, src in self.pre:
                dst.copy_(src)
            return
        stream = self._stream = _side_stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for dst, src in self.pre:
                dst.copy_(src, non_blocking=True)
                src.record_stream(stream)
            for dst, _ in self.post:
                dst.record_stream(stream)
            if self.pre:
                self._ev_in = torch.cuda.Event()
                self._ev_in.record(stream)

    def wait_in(self) -> None:
        """Before uccl reads the host buffers: waits for the device-to-host copies only."""
        if self._ev_in is not None:
            self._ev_in.synchronize()

    def stage_out(self) -> None:
        """After the operation completed."""
        if self.device is None:
            for dst, src in self.post:
                dst.copy_(src)
            return
        stream = self._stream or _side_stream(self.device)
        with torch.cuda.stream(stream):
            for dst, src in self.post:
                dst.copy_(src, non_blocking=True)
            self._ev_out = torch.cuda.Event()
            self._ev_out.record(stream)

    def sync_consumer(self) -> None:
        """The waiter's current stream waits for the copies back (the host does not)."""
        if self._ev_out is not None:
            torch.cuda.current_stream(self.device).wait_event(self._ev_out)

    def on_copy_stream(self):
        """A context in which the copy-back stream is current (a Future completed inside it
        records its CUDA events after the copies)."""
        if self.device is None:
            return contextlib.nullcontext()
        return torch.cuda.stream(self._stream or _side_stream(self.device))
