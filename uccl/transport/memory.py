"""Registered memory: a buffer gets a key; peers may touch it only through that key,
inside its bounds, with the access it grants. All checks happen in native code."""

from __future__ import annotations

from typing import Any

from uccl import _native
from uccl.errors import InvalidArgumentError

_FLAGS = {"w": _native.ACCESS_REMOTE_WRITE, "r": _native.ACCESS_REMOTE_READ}


def parse_access(access: str) -> int:
    """'' (local only), 'r', 'w' or 'rw' -> native access flags."""
    if not isinstance(access, str) or set(access) - set(_FLAGS):
        raise InvalidArgumentError(f"access must be '', 'r', 'w' or 'rw', got {access!r}")
    flags = 0
    for ch in access:
        flags |= _FLAGS[ch]
    return flags


class MemoryRegion:
    """A registered buffer. Share `key` with peers so they can write to / read from it."""

    def __init__(self, endpoint, buf: Any, access: str = "rw") -> None:
        self.addr, self.nbytes, self.itemsize, self.readonly = _native.describe_buffer(
            buf, False, endpoint.rank, "register")
        self.buffer = buf  # keeps the memory alive while it is registered
        try:  # and in place: a held export stops a bytearray or numpy array from being resized
            self._export: Any = memoryview(buf)
        except TypeError:  # torch tensors export no buffer
            self._export = None
        flags = parse_access(access)
        if self.readonly and flags & _native.ACCESS_REMOTE_WRITE:
            raise InvalidArgumentError(
                f"rank {endpoint.rank}: register: a read-only buffer cannot be a target of remote writes")
        self._native = endpoint._native
        self.rank = endpoint.rank
        self.access = access
        self.key: int = self._native.register_region(self.addr, self.nbytes, flags)
        self._registered = True

    def deregister(self) -> None:
        if self._registered:
            self._registered = False
            self._native.deregister_region(self.key)

    def __enter__(self) -> "MemoryRegion":
        return self

    def __exit__(self, *exc) -> None:
        self.deregister()

    def __repr__(self) -> str:
        state = "registered" if self._registered else "deregistered"
        return f"MemoryRegion(key=0x{self.key:x}, nbytes={self.nbytes}, access={self.access!r}, {state})"
