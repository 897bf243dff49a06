"""Communicator: every collective over the transport, on numpy arrays, torch CPU
tensors or any buffer-protocol object. The work happens in native code with the
GIL released; `async_op=True` returns a Work handle instead of blocking."""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Sequence

from uccl import _native
from uccl._buffers import buffer_info
from uccl.collectives.dtypes import dtype_of, op_of
from uccl.config import Config
from uccl.errors import InvalidArgumentError, UcclTimeoutError
from uccl.transport.bootstrap import Bootstrap, MPIBootstrap, bootstrap_from_env
from uccl.transport.endpoint import ANY_SOURCE, Endpoint, Request

_ESIZE = {_native.DataType.int8: 1, _native.DataType.uint8: 1, _native.DataType.bool: 1,
          _native.DataType.float16: 2, _native.DataType.bfloat16: 2, _native.DataType.int32: 4,
          _native.DataType.float32: 4, _native.DataType.int64: 8, _native.DataType.float64: 8}
_TUNING = os.path.join(os.path.dirname(__file__), "tuning.json")


def load_rules(path: str = _TUNING) -> list:
    """Tuning rules measured by perf/tune.py (shipped with the package)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        table = json.load(f)
    return [_native.TuneRule(r["collective"], r.get("world", 0), r["max_bytes"], r["algo"], r.get("chunk_bytes", 0),
                             r.get("transport", ""), r.get("channels", 0))
            for r in table.get("rules", [])]


def _op_name(op: Any) -> str:
    """'sum', torch's ReduceOp.SUM, or anything with a .name -> the native op's name."""
    if type(op) is str:
        return op
    return str(getattr(op, "name", op)).lower().replace("reduceop.", "")


class Work:
    """An async collective: wait(timeout) blocks until it is done (or raises its error)."""

    def __init__(self, native_work, keepalive: tuple, timeout: float, what: str, result: Any = None) -> None:
        self._work, self._keepalive, self._timeout, self._what, self.result = native_work, keepalive, timeout, what, result

    def wait(self, timeout: Optional[float] = None) -> Any:
        limit = self._timeout if timeout is None else timeout
        if not self._work.wait(limit):
            raise UcclTimeoutError(f"{self._what} did not complete within {limit:.3f} s")
        self._keepalive = ()
        return self.result

    def is_completed(self) -> bool:
        return self._work.test()

    test = is_completed


class Communicator:
    """A group of ranks running collectives together.

    Build it from a bootstrap (uccl.transport), from the environment
    (`Communicator.from_env()`: torchrun/uccl-run variables, mpirun, or a world of one)
    or under mpirun with `Communicator.from_mpi()`.
    """

    def __init__(self, bootstrap: Optional[Bootstrap] = None, config: Optional[Config] = None) -> None:
        self.config = config or Config.from_env()
        self.bootstrap = bootstrap or bootstrap_from_env(self.config.timeout)
        self.endpoint = Endpoint(self.bootstrap, self.config)
        self.rank, self.world_size = self.endpoint.rank, self.endpoint.world_size
        ccfg = _native.CommConfig()
        ccfg.algo = self.config.algo
        ccfg.chunk_bytes = self.config.chunk_size
        ccfg.channels = self.config.channels
        ccfg.rules = load_rules()
        self._native = _native.Communicator(self.endpoint._native, ccfg)
        self._native.connect(self.bootstrap.allgather(self._native.local_keys()))
        self.bootstrap.barrier()

    @classmethod
    def from_env(cls, config: Optional[Config] = None) -> "Communicator":
        return cls(bootstrap_from_env(), config)

    @classmethod
    def from_mpi(cls, comm=None, config: Optional[Config] = None) -> "Communicator":
        return cls(MPIBootstrap(comm), config)

    def split(self, color: Optional[int], key: int = 0) -> Optional["Communicator"]:
        """Ranks with the same color form a sub-communicator ordered by key; None opts out."""
        sub = self.bootstrap.split(color, key)
        return None if sub is None else Communicator(sub, self.config)

    # -- helpers ---------------------------------------------------------------------------
    def _where(self, op: str) -> str:
        return f"rank {self.rank}: {op}"

    def _buf(self, buf: Any, op: str, name: str, writable: bool = False):
        try:
            info = buffer_info(buf, name, writable)
            dt = dtype_of(buf, name, info.fmt)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"{self._where(op)}: {exc}") from None
        return info, dt, info.nbytes // _ESIZE[dt]

    def _pair(self, send: Any, recv: Any, op: str):
        sinfo, sdt, scount = self._buf(send, op, "input")
        rinfo, rdt, rcount = self._buf(recv, op, "output", writable=True)
        if sdt != rdt:
            raise InvalidArgumentError(f"{self._where(op)}: input is {sdt.name} but output is {rdt.name}")
        return sinfo, rinfo, sdt, scount, rcount

    def _done(self, what: str, work, send: Any, recv: Any):
        """The result of a *_buffers call: recv, or a Work when it was queued."""
        if work is None:
            return recv
        return Work(work, (send, recv), self.config.timeout, f"rank {self.rank}: {what}", recv)

    def _run(self, what: str, call, args: tuple, async_op: bool, keepalive: tuple, result: Any):
        work = call(*args, async_op)
        if async_op:
            return Work(work, keepalive, self.config.timeout, f"rank {self.rank}: {what}", result)
        return result

    def _counts(self, counts: Sequence[int], op: str, name: str) -> list[int]:
        counts = [int(c) for c in counts]
        if len(counts) != self.world_size:
            raise InvalidArgumentError(f"{self._where(op)}: {name} has {len(counts)} entries for "
                                       f"{self.world_size} ranks")
        if any(c < 0 for c in counts):
            raise InvalidArgumentError(f"{self._where(op)}: {name} has a negative entry")
        return counts

    @staticmethod
    def _displs(counts: list[int]) -> list[int]:
        out, acc = [], 0
        for c in counts:
            out.append(acc)
            acc += c
        return out

    # -- collectives -------------------------------------------------------------------------
    def all_reduce(self, send: Any, recv: Any = None, op: str = "sum", async_op: bool = False):
        """recv = op over ranks of send (in place when recv is None). Returns recv."""
        recv = send if recv is None else recv
        work = self._native.all_reduce_buffers(send, recv, _op_name(op), async_op)
        return self._done("all_reduce", work, send, recv)

    def reduce(self, send: Any, recv: Any = None, op: str = "sum", root: int = 0, async_op: bool = False):
        """The root's recv gets op over ranks of send; other ranks' recv is untouched."""
        recv = send if recv is None else recv
        sinfo, rinfo, dt, n, rn = self._pair(send, recv, "reduce")
        if self.rank == root and rn != n:
            raise InvalidArgumentError(f"{self._where('reduce')}: output has {rn} elements, input {n}")
        native_op = op_of(op, dt, self._where("reduce"))
        return self._run("reduce", self._native.reduce, (sinfo.addr, rinfo.addr, n, dt, native_op, root),
                         async_op, (sinfo.owner, rinfo.owner), recv)

    def broadcast(self, buf: Any, root: int = 0, async_op: bool = False):
        """Every rank's buf becomes the root's."""
        return self._done("broadcast", self._native.broadcast_buffers(buf, root, async_op), buf, buf)

    def all_gather(self, send: Any, recv: Any, async_op: bool = False):
        """recv = the concatenation of every rank's send (recv has world_size x len(send))."""
        return self._done("all_gather", self._native.all_gather_buffers(send, recv, async_op), send, recv)

    def all_gather_v(self, send: Any, recv: Any, counts: Sequence[int], displs: Optional[Sequence[int]] = None,
                     async_op: bool = False):
        """Rank j contributes counts[j] elements, placed at displs[j] (default: packed)."""
        counts = self._counts(counts, "all_gather_v", "counts")
        displs = self._displs(counts) if displs is None else self._counts(displs, "all_gather_v", "displs")
        sinfo, rinfo, dt, n, rn = self._pair(send, recv, "all_gather_v")
        if n != counts[self.rank]:
            raise InvalidArgumentError(f"{self._where('all_gather_v')}: input has {n} elements but "
                                       f"counts[{self.rank}] = {counts[self.rank]}")
        if max((d + c for d, c in zip(displs, counts)), default=0) > rn:
            raise InvalidArgumentError(f"{self._where('all_gather_v')}: output of {rn} elements is too small")
        return self._run("all_gather_v", self._native.all_gather_v, (sinfo.addr, rinfo.addr, counts, displs, dt),
                         async_op, (sinfo.owner, rinfo.owner), recv)

    def reduce_scatter(self, send: Any, recv: Any, op: str = "sum", async_op: bool = False):
        """recv = block `rank` of op over ranks of send (send has world_size x len(recv))."""
        work = self._native.reduce_scatter_buffers(send, recv, _op_name(op), async_op)
        return self._done("reduce_scatter", work, send, recv)

    def reduce_scatter_v(self, send: Any, recv: Any, counts: Sequence[int], op: str = "sum",
                         async_op: bool = False):
        """Rank j gets counts[j] elements: its block of op over ranks of send."""
        counts = self._counts(counts, "reduce_scatter_v", "counts")
        sinfo, rinfo, dt, n, rn = self._pair(send, recv, "reduce_scatter_v")
        if n != sum(counts) or rn < counts[self.rank]:
            raise InvalidArgumentError(f"{self._where('reduce_scatter_v')}: input has {n} elements (counts sum to "
                                       f"{sum(counts)}), output {rn} (needs {counts[self.rank]})")
        native_op = op_of(op, dt, self._where("reduce_scatter_v"))
        return self._run("reduce_scatter_v", self._native.reduce_scatter_v,
                         (sinfo.addr, rinfo.addr, counts, dt, native_op), async_op, (sinfo.owner, rinfo.owner), recv)

    def all_to_all(self, send: Any, recv: Any, async_op: bool = False):
        """Block j of send goes to rank j; block i of recv comes from rank i (equal blocks)."""
        return self._done("all_to_all", self._native.all_to_all_buffers(send, recv, async_op), send, recv)

    def all_to_all_v(self, send: Any, send_counts: Sequence[int], recv: Any, recv_counts: Sequence[int],
                     send_displs: Optional[Sequence[int]] = None, recv_displs: Optional[Sequence[int]] = None,
                     async_op: bool = False):
        """send_counts[j] elements go to rank j; recv_counts[i] come from rank i."""
        sc = self._counts(send_counts, "all_to_all_v", "send_counts")
        rc = self._counts(recv_counts, "all_to_all_v", "recv_counts")
        sd = self._displs(sc) if send_displs is None else self._counts(send_displs, "all_to_all_v", "send_displs")
        rd = self._displs(rc) if recv_displs is None else self._counts(recv_displs, "all_to_all_v", "recv_displs")
        sinfo, rinfo, dt, n, rn = self._pair(send, recv, "all_to_all_v")
        if max((d + c for d, c in zip(sd, sc)), default=0) > n:
            raise InvalidArgumentError(f"{self._where('all_to_all_v')}: send counts exceed the input ({n})")
        if max((d + c for d, c in zip(rd, rc)), default=0) > rn:
            raise InvalidArgumentError(f"{self._where('all_to_all_v')}: recv counts exceed the output ({rn})")
        return self._run("all_to_all_v", self._native.all_to_all_v, (sinfo.addr, sc, sd, rinfo.addr, rc, rd, dt),
                         async_op, (sinfo.owner, rinfo.owner), recv)

    def gather(self, send: Any, recv: Any = None, root: int = 0, async_op: bool = False):
        """The root's recv (world_size x len(send)) gets every rank's send."""
        sinfo, sdt, n = self._buf(send, "gather", "input")
        if self.rank == root:
            rinfo, rdt, rn = self._buf(recv, "gather", "output", writable=True)
            if rdt != sdt or rn != n * self.world_size:
                raise InvalidArgumentError(f"{self._where('gather')}: output must be {self.world_size} x {n} "
                                           f"{sdt.name}, got {rn} {rdt.name}")
            raddr, rowner = rinfo.addr, rinfo.owner
        else:
            raddr, rowner = sinfo.addr, None
        return self._run("gather", self._native.gather, (sinfo.addr, raddr, n, sdt, root), async_op,
                         (sinfo.owner, rowner), recv)

    def scatter(self, send: Any, recv: Any, root: int = 0, async_op: bool = False):
        """Block j of the root's send (world_size x len(recv)) goes to rank j's recv."""
        rinfo, rdt, n = self._buf(recv, "scatter", "output", writable=True)
        if self.rank == root:
            sinfo, sdt, sn = self._buf(send, "scatter", "input")
            if sdt != rdt or sn != n * self.world_size:
                raise InvalidArgumentError(f"{self._where('scatter')}: input must be {self.world_size} x {n} "
                                           f"{rdt.name}, got {sn} {sdt.name}")
            saddr, sowner = sinfo.addr, sinfo.owner
        else:
            saddr, sowner = rinfo.addr, None
        return self._run("scatter", self._native.scatter, (saddr, rinfo.addr, n, rdt, root), async_op,
                         (sowner, rinfo.owner), recv)

    def barrier(self, async_op: bool = False):
        return self._run("barrier", self._native.barrier, (), async_op, (), None)

    # -- point to point ----------------------------------------------------------------------
    def isend(self, buf: Any, peer: int, tag: int = 0) -> Request:
        return self.endpoint.send(peer, buf, tag)

    def irecv(self, buf: Any, peer: int = ANY_SOURCE, tag: int = 0) -> Request:
        return self.endpoint.recv(peer, buf, tag)

    def send(self, buf: Any, peer: int, tag: int = 0) -> None:
        self.isend(buf, peer, tag).wait()

    def recv(self, buf: Any, peer: int = ANY_SOURCE, tag: int = 0) -> int:
        """Receives into buf; returns the sender's rank."""
        return self.irecv(buf, peer, tag).wait().peer

    def algorithm(self, collective: str, nbytes: int) -> tuple:
        """(algorithm, chunk bytes, channels) the tuner picks for a call of `nbytes`."""
        return tuple(self._native.choice(collective, nbytes))
