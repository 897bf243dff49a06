"""Bootstrap: how ranks find each other before the transport exists.

One interface (allgather of small byte strings, barrier) with three implementations:
any torch-style Store (torch's TCPStore/FileStore, or uccl's own TCPStore), mpi4py
under mpirun, and a single-process one.
"""

from __future__ import annotations

import os
import pickle
from abc import ABC, abstractmethod

from uccl.errors import InvalidArgumentError, UcclTimeoutError


class Bootstrap(ABC):
    rank: int
    world_size: int

    @abstractmethod
    def allgather(self, value: bytes) -> list[bytes]:
        """Every rank contributes `value`; every rank gets all of them, indexed by rank."""

    def barrier(self) -> None:
        self.allgather(b"")

    def broadcast(self, value: bytes | None, root: int = 0) -> bytes:
        return self.allgather(value if self.rank == root else b"")[root]

    def split(self, color: int | None, key: int = 0) -> "Bootstrap | None":
        """Every rank calls this; ranks with the same color form a new group, ordered
        by (key, old rank). A rank whose color is None joins no group (gets None)."""
        entries = [pickle.loads(b) for b in self.allgather(pickle.dumps((color, key)))]
        if color is None:
            return None
        members = sorted((k, r) for r, (c, k) in enumerate(entries) if c == color)
        ranks = [r for _, r in members]
        return self._subgroup(color, ranks)

    def _subgroup(self, color: int, ranks: list[int]) -> "Bootstrap":
        raise NotImplementedError(f"{type(self).__name__} cannot form subgroups")


class LocalBootstrap(Bootstrap):
    """A world of one."""

    rank, world_size = 0, 1

    def allgather(self, value: bytes) -> list[bytes]:
        return [bytes(value)]

    def _subgroup(self, color: int, ranks: list[int]) -> Bootstrap:
        return LocalBootstrap()


class StoreBootstrap(Bootstrap):
    """Works over any object with set(key, bytes) and a blocking get(key)."""

    def __init__(self, store, rank: int, world_size: int, prefix: str = "uccl") -> None:
        if not 0 <= rank < world_size:
            raise InvalidArgumentError(f"bootstrap: rank {rank} is outside world of size {world_size}")
        self.store, self.rank, self.world_size, self.prefix = store, rank, world_size, prefix
        self._round = 0

    def _subgroup(self, color: int, ranks: list[int]) -> Bootstrap:
        # Same store, a key space of its own: the group bootstraps independently from here on.
        return StoreBootstrap(self.store, ranks.index(self.rank), len(ranks),
                              prefix=f"{self.prefix}/split{self._round}/color{color}")

    def allgather(self, value: bytes) -> list[bytes]:
        self._round += 1
        base = f"{self.prefix}/ag{self._round}"
        self.store.set(f"{base}/{self.rank}", bytes(value))
        out = []
        for peer in range(self.world_size):
            try:
                out.append(bytes(self.store.get(f"{base}/{peer}")))
            except UcclTimeoutError as exc:
                raise UcclTimeoutError(f"rank {self.rank}: bootstrap: rank {peer} never arrived ({exc})") from exc
            except RuntimeError as exc:  # torch's stores raise DistStoreError (a RuntimeError)
                raise UcclTimeoutError(f"rank {self.rank}: bootstrap: waiting for rank {peer}: {exc}") from exc
        return out


class MPIBootstrap(Bootstrap):
    """Under mpirun: exchanges through mpi4py."""

    def __init__(self, comm=None) -> None:
        from mpi4py import MPI

        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.world_size = self.comm.Get_rank(), self.comm.Get_size()

    def allgather(self, value: bytes) -> list[bytes]:
        return [bytes(v) for v in self.comm.allgather(bytes(value))]

    def barrier(self) -> None:
        self.comm.Barrier()

    def split(self, color: int | None, key: int = 0) -> Bootstrap | None:
        from mpi4py import MPI

        sub = self.comm.Split(MPI.UNDEFINED if color is None else color, key)
        return None if color is None else MPIBootstrap(sub)


_MPI_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")


def launched_by_mpi() -> bool:
    return any(v in os.environ for v in _MPI_RANK_VARS)


def bootstrap_from_env(timeout: float | None = None) -> Bootstrap:
    """RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT (torchrun, uccl-run) -> TCP store;
    mpirun -> mpi4py; nothing -> a world of one."""
    from uccl.config import Config
    from uccl.transport.store import TCPStore

    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        host = os.environ.get("MASTER_ADDR", "127.0.0.1")
        port = int(os.environ.get("MASTER_PORT", "29500"))
        store = TCPStore(host, port, world, is_master=rank == 0, timeout=timeout or Config.from_env().timeout)
        return StoreBootstrap(store, rank, world)
    if launched_by_mpi():
        return MPIBootstrap()
    return LocalBootstrap()
