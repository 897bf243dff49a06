"""Endpoint: one-sided writes/reads into registered regions, two-sided messages,
completions. Same operations over every channel (shared memory today)."""

from __future__ import annotations

import secrets
import struct
from typing import Any, Optional

from uccl import _native
from uccl.config import Config
from uccl.errors import InvalidArgumentError
from uccl.transport.bootstrap import Bootstrap
from uccl.transport.memory import MemoryRegion

ANY_SOURCE = _native.ANY_SOURCE
Completion = _native.Completion
_WRITE, _READ, _SEND = _native.Opcode.WRITE, _native.Opcode.READ, _native.Opcode.SEND


class Request:
    """A posted operation; `wait()` returns its Completion or raises its error.

    The endpoint keeps what the operation uses alive until it completes, so a request
    may be dropped unwaited (fire and forget): its completion is then discarded, and
    a failure is raised by the next wait that concerns its peer."""

    __slots__ = ("_ep", "wr_id", "_completion", "_done", "_desc")

    def __init__(self, endpoint: "Endpoint", posted, desc: tuple = ()) -> None:
        self._ep, self._completion = endpoint, None
        if isinstance(posted, int):
            self.wr_id, self._done = posted, False
        else:  # a native Posted: `done` means it finished before returning
            self.wr_id, self._done = posted.wr_id, posted.done
        self._desc = desc

    def wait(self, timeout: Optional[float] = None) -> Completion:
        if self._completion is None:
            if self._done:
                self._completion = Completion(*self._desc)
            else:
                self._completion = self._ep._native.wait(self.wr_id, self._ep._timeout(timeout))
        return self._completion

    def test(self) -> bool:
        return self._done or self._completion is not None or self._ep._native.test(self.wr_id)

    def __del__(self) -> None:
        if self._done or self._completion is not None:
            return
        native = getattr(self._ep, "_native", None)
        if native is not None:  # None: the endpoint was closed
            try:
                native.detach(self.wr_id)
            except Exception:  # at interpreter exit the module may be half torn down
                pass


def _check_spans(rank: int, op: str, itemsize: int, **spans: int) -> None:
    for name, value in spans.items():
        if value < 0:
            raise InvalidArgumentError(f"rank {rank}: {op}: {name} must be >= 0, got {value}")
        if value % itemsize:
            raise InvalidArgumentError(
                f"rank {rank}: {op}: {name} {value} is not a multiple of the buffer's item size {itemsize}")


class Endpoint:
    """This process's attachment to a job of `world_size` ranks."""

    def __init__(self, bootstrap: Bootstrap, config: Optional[Config] = None, host_tag: str = "") -> None:
        """`host_tag`: the host a declared topology puts this rank on (ranks with different
        tags use the net channel between them; uccl/collectives/topology.py)."""
        self.config = config or Config.from_env()
        self.bootstrap = bootstrap
        self.rank, self.world_size = bootstrap.rank, bootstrap.world_size
        secret = bootstrap.broadcast(secrets.token_bytes(8) if self.rank == 0 else None, root=0)
        ncfg = _native.EndpointConfig()
        ncfg.rank, ncfg.world = self.rank, self.world_size
        ncfg.secret = struct.unpack("<Q", secret)[0]
        ncfg.transport = self.config.transport
        ncfg.host_tag = host_tag
        ncfg.timeout_s = self.config.timeout
        ncfg.spin_us = self.config.spin_us
        ncfg.yield_us = self.config.yield_us
        ncfg.ring_bytes = self.config.shm_ring_bytes
        ncfg.arena_bytes = self.config.shm_arena_bytes
        ncfg.inline_max = self.config.inline_max
        ncfg.max_regions = self.config.max_regions
        net = ncfg.net
        net.ifname, net.addr, net.num_paths = self.config.ifname, self.config.addr, self.config.num_paths
        net.cc, net.mtu = self.config.cc, self.config.mtu
        net.rto_ms, net.max_retries = self.config.rto_ms, self.config.max_retries
        net.swift_target_us = self.config.swift_target_us
        ncfg.net = net
        self._native = _native.Endpoint(ncfg)
        self._native.connect(bootstrap.allgather(self._native.descriptor()))
        bootstrap.barrier()  # every peer has mapped us before anyone sends

    def _timeout(self, timeout: Optional[float]) -> float:
        return self.config.timeout if timeout is None else float(timeout)

    def channel(self, peer: int) -> str:
        """Which channel reaches `peer` ("shm" or "net")."""
        return self._native.channel_kind(peer)

    def refused_by_us(self, peer: int) -> int:
        """Operations of `peer`'s this endpoint refused so far (out of bounds, unknown key, no
        access). Only the net channel refuses after the fact; over shm the writer's call fails."""
        return self._native.refused_by_us(peer)

    def register(self, buf: Any, access: str = "rw") -> MemoryRegion:
        """Registers a buffer; access: 'w' peers may write, 'r' peers may read, 'rw', or ''."""
        return MemoryRegion(self, buf, access)

    def write(self, peer: int, local: MemoryRegion, remote_key: int, *, length: Optional[int] = None,
              offset: int = 0, remote_offset: int = 0, imm: Optional[int] = None) -> Request:
        """Writes local[offset:offset+length] into the peer's region at remote_offset;
        with `imm`, the peer's completion queue receives it once the data has landed."""
        length = local.nbytes - offset if length is None else length
        if (length | offset | remote_offset) < 0 or local.itemsize > 1:  # fast path for the common case
            _check_spans(self.rank, "write", local.itemsize, length=length, offset=offset,
                         remote_offset=remote_offset)
        if imm is not None and not 0 <= imm < 2**32:
            raise InvalidArgumentError(f"rank {self.rank}: write: imm must fit in 32 bits, got {imm}")
        posted = self._native.write(peer, local.key, offset, length, remote_key, remote_offset, imm is not None,
                                    imm or 0, local)
        return Request(self, posted, (_WRITE, peer, length))

    def read(self, peer: int, local: MemoryRegion, remote_key: int, *, length: Optional[int] = None,
             offset: int = 0, remote_offset: int = 0) -> Request:
        """Reads the peer's region (which must grant 'r') into local[offset:offset+length]."""
        length = local.nbytes - offset if length is None else length
        _check_spans(self.rank, "read", local.itemsize, length=length, offset=offset, remote_offset=remote_offset)
        if local.readonly:
            raise InvalidArgumentError(f"rank {self.rank}: read: the local target buffer is read-only")
        return Request(self, self._native.read(peer, local.key, offset, length, remote_key, remote_offset, local),
                       (_READ, peer, length))

    def send(self, peer: int, buf: Any, tag: int = 0) -> Request:
        """Sends a message; completes once `buf` may be reused."""
        addr, nbytes, _, _ = _native.describe_buffer(buf, False, self.rank, "send")
        self._check_tag(tag, "send")
        return Request(self, self._native.send(peer, addr, nbytes, tag, buf), (_SEND, peer, nbytes, tag))

    def recv(self, src: int, buf: Any, tag: int = 0) -> Request:
        """Receives a message from `src` (or ANY_SOURCE) into `buf`; the completion
        carries the sender and length. A message larger than `buf` is an error."""
        addr, nbytes, _, _ = _native.describe_buffer(buf, True, self.rank, "recv")
        self._check_tag(tag, "recv")
        return Request(self, self._native.post_recv(src, addr, nbytes, tag, buf))

    def _check_tag(self, tag: int, op: str) -> None:
        if not 0 <= tag < 2**64:
            raise InvalidArgumentError(f"rank {self.rank}: {op}: tag must be a non-negative 64-bit int, got {tag}")

    def wait_remote_write(self, src: int = ANY_SOURCE, timeout: Optional[float] = None) -> Completion:
        """The next write-with-immediate that landed here (from `src`, or anyone)."""
        return self._native.wait_remote_write(src, self._timeout(timeout))

    def alloc_shared(self, nbytes: int):
        """A writable byte buffer in this endpoint's shared arena (UCCL_SHM_ARENA_BYTES): peers on
        this host write into it with memcpy instead of a cross-memory system call. None when the
        arena is full. It stays valid while referenced, after close() too; register it as usual."""
        return self._native.alloc_shared(nbytes)

    def poll(self, max_completions: int = 64) -> list:
        """Remote writes-with-immediate that have landed, without blocking."""
        return self._native.poll_remote_writes(max_completions)

    def stats(self) -> dict:
        return self._native.stats()

    def close(self) -> None:
        """Releases the endpoint (its shared segment goes away with the last mapping)."""
        self._native = None

    def __enter__(self) -> "Endpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
