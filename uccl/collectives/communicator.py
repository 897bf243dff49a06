"""Communicator: every collective over the transport, on numpy arrays, torch CPU
tensors or any buffer-protocol object. The work happens in native code with the
GIL released; `async_op=True` returns a Work handle instead of blocking."""

from __future__ import annotations

import functools
import glob
import json
import os
from typing import Any, Optional, Sequence

from uccl import _native
from uccl.collectives.topology import Declared, Topology, check_agreement, discover
from uccl.config import Config
from uccl.errors import UcclTimeoutError
from uccl.transport.bootstrap import Bootstrap, MPIBootstrap, bootstrap_from_env
from uccl.transport.endpoint import ANY_SOURCE, Endpoint, Request

_TUNING_DIR = os.path.dirname(__file__)


def host_cpus() -> int:
    """CPUs this process may run on (what the helper threads of a channel can use)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=None)
def _table(path: str) -> dict:
    """A tuning table, read once per process (every Communicator and split consults them)."""
    with open(path) as f:
        return json.load(f)


def tuning_tables(cpus: Optional[int] = None, folder: str = _TUNING_DIR) -> list:
    """The shipped tables (tuning*.json, one per host size measured by perf/tune.py) that
    fit a host of `cpus` CPUs, best first: measured on the largest host not larger than
    this one, then smaller ones (a table from a bigger host would ask for more channels
    than there are cores). The tables of the smallest host stand in if none fits.
    (tuning-fabric.json, measured on an emulated network by perf/tune.py --fabric, is one
    of them; its rules apply only to the topology shapes it names.)"""
    cpus = host_cpus() if cpus is None else cpus
    paths = glob.glob(os.path.join(folder, "tuning*.json"))
    tables = [(int(_table(path).get("host_cpus", 1)), path) for path in paths]
    fitting = sorted((t for t in tables if t[0] <= cpus), reverse=True)
    smallest = min((c for c, _ in tables), default=0)
    return [p for _, p in fitting] or [p for c, p in sorted(tables, reverse=True) if c == smallest]


def load_rules(paths: Optional[Sequence[str]] = None) -> list:
    """Tuning rules for this host. The tuner takes the first rule that fits, so a case the
    best table measured (a collective, world and transport) is decided there, and cases
    it lacks fall through to the next table. Rules keyed by the topology's shape or link
    (tuning-fabric.json, from perf/tune.py --fabric) come before the others wherever they fit."""
    rules = []
    for path in tuning_tables() if paths is None else paths:
        table = _table(path)
        rules += [_native.TuneRule(r["collective"], r.get("world", 0), r["max_bytes"], r["algo"],
                                   r.get("chunk_bytes", 0), r.get("transport", ""), r.get("channels", 0),
                                   r.get("topology", ""), r.get("ranks_per_host", 0), r.get("hosts_per_leaf", 0),
                                   r.get("link", ""))
                  for r in table.get("rules", [])]
    return rules


def _ints(values: Optional[Sequence[int]]) -> Optional[list]:
    """Counts or displacements as plain ints (numpy and torch integers included); None stays None."""
    return None if values is None else [int(v) for v in values]


def _op_name(op: Any) -> str:
    """'sum', torch's ReduceOp.SUM, or anything with a .name -> the native op's name."""
    if type(op) is str:
        return op
    return str(getattr(op, "name", op)).lower().replace("reduceop.", "")


class Work:
    """An async collective: wait(timeout) blocks until it is done (or raises its error).
    The native call holds its buffers until it ends, whether or not this handle is kept."""

    def __init__(self, native_work, timeout: float, what: str, result: Any = None) -> None:
        self._work, self._timeout, self._what, self.result = native_work, timeout, what, result

    def wait(self, timeout: Optional[float] = None) -> Any:
        limit = self._timeout if timeout is None else timeout
        if not self._work.wait(limit):
            raise UcclTimeoutError(f"{self._what} did not complete within {limit:.3f} s")
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

    def __init__(self, bootstrap: Optional[Bootstrap] = None, config: Optional[Config] = None,
                 world_ranks: Optional[Sequence[int]] = None) -> None:
        """`world_ranks`: the job ranks this communicator's ranks are (a sub-group's), which
        UCCL_TOPOLOGY names; by default the communicator is the whole job."""
        self.config = config or Config.from_env()
        self.bootstrap = bootstrap or bootstrap_from_env(self.config.timeout)
        self.world_ranks = list(world_ranks) if world_ranks is not None else None
        rank = self.bootstrap.rank
        declared = Declared(self.config.topology, self.bootstrap.world_size, self.world_ranks)
        check_agreement(rank, declared, self.bootstrap)
        self.endpoint = Endpoint(self.bootstrap, self.config, host_tag=declared.host_tag(rank))
        self.rank, self.world_size = self.endpoint.rank, self.endpoint.world_size
        self._topology = discover(self.rank, declared, self.endpoint, self.bootstrap)
        ccfg = _native.CommConfig()
        ccfg.algo = self.config.algo
        ccfg.chunk_bytes = self.config.chunk_size
        ccfg.channels = self.config.channels
        ccfg.rules = load_rules()
        ccfg.topology = [list(level) for level in self._topology.levels]
        ccfg.link = self._topology.link
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
        if sub is None:
            return None
        mine = self.world_ranks[self.rank] if self.world_ranks is not None else self.rank
        ranks = [int(b) for b in sub.allgather(str(mine).encode())]
        return Communicator(sub, self.config, world_ranks=ranks)

    # -- helpers ---------------------------------------------------------------------------
    def _done(self, what: str, work, send: Any, recv: Any):
        """The result of a native collective: recv, or a Work when it was queued."""
        if work is None:
            return recv
        return Work(work, self.config.timeout, f"rank {self.rank}: {what}", recv)

    # -- collectives -------------------------------------------------------------------------
    def all_reduce(self, send: Any, recv: Any = None, op: str = "sum", async_op: bool = False):
        """recv = op over ranks of send (in place when recv is None). Returns recv."""
        recv = send if recv is None else recv
        work = self._native.all_reduce(send, recv, _op_name(op), async_op)
        return self._done("all_reduce", work, send, recv)

    def reduce(self, send: Any, recv: Any = None, op: str = "sum", root: int = 0, async_op: bool = False):
        """The root's recv gets op over ranks of send (in place when recv is None); other ranks' recv is untouched."""
        recv = send if recv is None else recv
        return self._done("reduce", self._native.reduce(send, recv, _op_name(op), root, async_op), send, recv)

    def broadcast(self, buf: Any, root: int = 0, async_op: bool = False):
        """Every rank's buf becomes the root's."""
        return self._done("broadcast", self._native.broadcast(buf, root, async_op), buf, buf)

    def all_gather(self, send: Any, recv: Any, async_op: bool = False):
        """recv = the concatenation of every rank's send (recv has world_size x len(send))."""
        return self._done("all_gather", self._native.all_gather(send, recv, async_op), send, recv)

    def all_gather_v(self, send: Any, recv: Any, counts: Sequence[int], displs: Optional[Sequence[int]] = None,
                     async_op: bool = False):
        """Rank j contributes counts[j] elements, placed at displs[j] (default: packed)."""
        work = self._native.all_gather_v(send, recv, _ints(counts), _ints(displs), async_op)
        return self._done("all_gather_v", work, send, recv)

    def reduce_scatter(self, send: Any, recv: Any, op: str = "sum", async_op: bool = False):
        """recv = block `rank` of op over ranks of send (send has world_size x len(recv))."""
        work = self._native.reduce_scatter(send, recv, _op_name(op), async_op)
        return self._done("reduce_scatter", work, send, recv)

    def reduce_scatter_v(self, send: Any, recv: Any, counts: Sequence[int], op: str = "sum",
                         async_op: bool = False):
        """Rank j gets counts[j] elements: its block of op over ranks of send."""
        work = self._native.reduce_scatter_v(send, recv, _ints(counts), _op_name(op), async_op)
        return self._done("reduce_scatter_v", work, send, recv)

    def all_to_all(self, send: Any, recv: Any, async_op: bool = False):
        """Block j of send goes to rank j; block i of recv comes from rank i (equal blocks)."""
        return self._done("all_to_all", self._native.all_to_all(send, recv, async_op), send, recv)

    def all_to_all_v(self, send: Any, send_counts: Sequence[int], recv: Any, recv_counts: Sequence[int],
                     send_displs: Optional[Sequence[int]] = None, recv_displs: Optional[Sequence[int]] = None,
                     async_op: bool = False):
        """send_counts[j] elements go to rank j (from send_displs[j]); recv_counts[i] come from rank i."""
        work = self._native.all_to_all_v(send, _ints(send_counts), recv, _ints(recv_counts),
                                         _ints(send_displs), _ints(recv_displs), async_op)
        return self._done("all_to_all_v", work, send, recv)

    def gather(self, send: Any, recv: Any = None, root: int = 0, async_op: bool = False):
        """The root's recv (world_size x len(send)) gets every rank's send; other ranks pass no recv."""
        return self._done("gather", self._native.gather(send, recv, root, async_op), send, recv)

    def scatter(self, send: Any, recv: Any, root: int = 0, async_op: bool = False):
        """Block j of the root's send (world_size x len(recv)) goes to rank j's recv; others pass send=None."""
        return self._done("scatter", self._native.scatter(send, recv, root, async_op), send, recv)

    def barrier(self, async_op: bool = False):
        return self._done("barrier", self._native.barrier(async_op), None, None)

    def isend(self, buf: Any, peer: int, tag: int = 0) -> Request:
        return self.endpoint.send(peer, buf, tag)

    def irecv(self, buf: Any, peer: int = ANY_SOURCE, tag: int = 0) -> Request:
        return self.endpoint.recv(peer, buf, tag)

    def send(self, buf: Any, peer: int, tag: int = 0) -> None:
        self.isend(buf, peer, tag).wait()

    def recv(self, buf: Any, peer: int = ANY_SOURCE, tag: int = 0) -> int:
        """Receives into buf; returns the sender's rank."""
        return self.irecv(buf, peer, tag).wait().peer

    def topology(self) -> Topology:
        """The topology in effect (hosts from the channels, levels above from UCCL_TOPOLOGY or
        SLURM_TOPOLOGY_ADDR: `.source`), as the native collectives see it."""
        t = self._topology
        return Topology(tuple(tuple(level) for level in self._native.topology()), t.declared, t.source, t.link)

    def tune_shape(self) -> dict:
        """What the tuner keys rules by here: topology ('layered' or 'flat'), ranks_per_host,
        hosts_per_leaf and link (what carries the slowest level)."""
        return dict(self._native.tune_shape())

    def algorithm(self, collective: str, nbytes: int) -> tuple:
        """(algorithm, chunk bytes, channels) the tuner picks for a call of `nbytes`."""
        return tuple(self._native.choice(collective, nbytes))
