"""The three backends the perf scripts time (uccl's Communicator, torch's gloo
ProcessGroup, MPI through mpi4py) and how the ranks meet under mpirun, uccl-run/torchrun
or alone."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import numpy as np

from _nccl_data import Case

# --------------------------------------------------------------------------------------
# Backends: prepare(case) -> (callable running the collective once, result view) or a
# reason it cannot run that case
# --------------------------------------------------------------------------------------


class Unsupported(Exception):
    pass


class UcclBackend:
    name = "uccl"

    def __init__(self, comm) -> None:
        self.comm = comm

    def barrier(self) -> None:
        self.comm.barrier()

    def prepare(self, c: Case):
        comm, name, op, root = self.comm, c.coll.name, c.op, c.root
        s, r = c.send, c.recv
        if name == "all_reduce":
            if c.inplace:
                return (lambda: comm.all_reduce(r, op=op)), r
            return (lambda: comm.all_reduce(s, r, op=op)), r
        if name == "all_gather":
            return (lambda: comm.all_gather(s, r)), r
        if name == "reduce_scatter":
            return (lambda: comm.reduce_scatter(s, r, op=op)), r
        if name == "alltoall":
            return (lambda: comm.all_to_all(s, r)), r
        if name == "broadcast":
            if not c.inplace:
                raise Unsupported("broadcast is in place only")
            return (lambda: comm.broadcast(s, root)), s
        if name == "reduce":
            return (lambda: comm.reduce(s, None if c.inplace else r, op=op, root=root)), r
        if name == "sendrecv":
            if c.inplace:
                raise Unsupported("send and receive into one buffer race")
            nxt, prv = (comm.rank + 1) % comm.world_size, (comm.rank - 1) % comm.world_size

            def sendrecv():
                rq = comm.irecv(r, prv)
                sq = comm.isend(s, nxt)
                sq.wait()
                rq.wait()
            return sendrecv, r
        raise Unsupported(name)


class GlooBackend:
    name = "gloo"

    def __init__(self, group=None) -> None:
        import torch
        import torch.distributed as dist

        self.torch, self.dist, self.group = torch, dist, group
        self.ops = {"sum": dist.ReduceOp.SUM, "prod": dist.ReduceOp.PRODUCT, "max": dist.ReduceOp.MAX,
                    "min": dist.ReduceOp.MIN, "avg": dist.ReduceOp.AVG}

    def barrier(self) -> None:
        self.dist.barrier(group=self.group)

    def _t(self, buf):
        return buf if not isinstance(buf, np.ndarray) else self.torch.from_numpy(buf)

    def prepare(self, c: Case):
        dist, g, name = self.dist, self.group, c.coll.name
        op, root = self.ops[c.op], c.root
        s, r = self._t(c.send), self._t(c.recv)
        if name == "all_reduce":
            if not c.inplace:
                raise Unsupported("torch.distributed.all_reduce is in place only")
            return (lambda: dist.all_reduce(r, op=op, group=g)), c.recv
        if name == "all_gather":
            return (lambda: dist.all_gather_into_tensor(r, s, group=g)), c.recv
        if name == "reduce_scatter":
            return (lambda: dist.reduce_scatter_tensor(r, s, op=op, group=g)), c.recv
        if name == "alltoall":
            if c.inplace:
                raise Unsupported("all_to_all_single in place gives wrong results with gloo")
            return (lambda: dist.all_to_all_single(r, s, group=g)), c.recv
        if name == "broadcast":
            if not c.inplace:
                raise Unsupported("broadcast is in place only")
            return (lambda: dist.broadcast(s, root, group=g)), c.send
        if name == "reduce":
            if not c.inplace:
                raise Unsupported("torch.distributed.reduce is in place only")
            return (lambda: dist.reduce(s, root, op=op, group=g)), c.send
        if name == "sendrecv":
            if c.inplace:
                raise Unsupported("send and receive into one buffer race")
            rank, n = c.rank, c.nranks

            def sendrecv():
                rq = dist.irecv(r, (rank - 1) % n, group=g)
                sq = dist.isend(s, (rank + 1) % n, group=g)
                sq.wait()
                rq.wait()
            return sendrecv, c.recv
        raise Unsupported(name)


class MpiBackend:
    name = "mpi"

    def __init__(self, comm=None) -> None:
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.ops = {"sum": MPI.SUM, "prod": MPI.PROD, "max": MPI.MAX, "min": MPI.MIN}

    def barrier(self) -> None:
        self.comm.Barrier()

    def prepare(self, c: Case):
        MPI, comm, name, root = self.MPI, self.comm, c.coll.name, c.root
        if c.dtype == "bfloat16":
            raise Unsupported("MPI has no bfloat16")
        if c.coll.reduces and c.op not in self.ops:
            raise Unsupported(f"MPI has no {c.op} reduction")
        op = self.ops.get(c.op)
        s, r, ip = c.send, c.recv, c.inplace
        if name == "all_reduce":
            return ((lambda: comm.Allreduce(MPI.IN_PLACE, r, op)) if ip else (lambda: comm.Allreduce(s, r, op))), r
        if name == "all_gather":
            return ((lambda: comm.Allgather(MPI.IN_PLACE, r)) if ip else (lambda: comm.Allgather(s, r))), r
        if name == "reduce_scatter":
            if ip:  # MPI's in-place reduce_scatter leaves the result at the start of the buffer
                full, res = c.full, c.full[:c.recvcount]
                return (lambda: comm.Reduce_scatter_block(MPI.IN_PLACE, full, op)), res
            return (lambda: comm.Reduce_scatter_block(s, r, op)), r
        if name == "alltoall":
            return ((lambda: comm.Alltoall(MPI.IN_PLACE, r)) if ip else (lambda: comm.Alltoall(s, r))), r
        if name == "broadcast":
            if not ip:
                raise Unsupported("MPI_Bcast is in place only")
            return (lambda: comm.Bcast(s, root)), s
        if name == "reduce":
            if ip:
                sb = MPI.IN_PLACE if comm.rank == root else s
                return (lambda: comm.Reduce(sb, s, op, root)), s
            return (lambda: comm.Reduce(s, r, op, root)), r
        if name == "sendrecv":
            if ip:
                raise Unsupported("send and receive into one buffer race")
            nxt, prv = (comm.rank + 1) % comm.size, (comm.rank - 1) % comm.size
            return (lambda: comm.Sendrecv(s, nxt, 0, r, prv, 0)), r
        raise Unsupported(name)


# --------------------------------------------------------------------------------------
# Launch: who am I, how do the ranks meet
# --------------------------------------------------------------------------------------


@dataclass
class World:
    rank: int
    size: int
    how: str          # "mpirun" | "env" | "single"
    uccl: object      # Communicator
    control: object   # a uccl Bootstrap: allgather of small byte strings
    gloo_group: object = None
    mpi_ok: bool = False


def _launched_by_mpi() -> bool:
    return any(v in os.environ for v in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"))


def _gloo_over_mpi(mpi_comm):
    """torch's gloo group under mpirun: rank 0 hosts a TCPStore, its address goes through MPI."""
    import datetime

    import torch.distributed as dist

    rank, n = mpi_comm.Get_rank(), mpi_comm.Get_size()
    timeout = datetime.timedelta(seconds=300)
    if rank == 0:
        host = "127.0.0.1" if n == 1 else socket.gethostbyname(socket.gethostname())
        store = dist.TCPStore("0.0.0.0", 0, n, is_master=True, wait_for_workers=False, timeout=timeout)
        addr = (host, store.port)
    else:
        addr = None
    addr = mpi_comm.bcast(addr, root=0)
    if rank != 0:
        host = addr[0]
        if host == socket.gethostbyname(socket.gethostname()):
            host = "127.0.0.1"
        store = dist.TCPStore(host, addr[1], n, is_master=False, timeout=timeout)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=n, timeout=timeout)
    return dist.group.WORLD


def setup_world(want_gloo: bool, want_mpi: bool) -> World:
    from uccl.collectives import Communicator

    if _launched_by_mpi():
        from mpi4py import MPI

        comm = Communicator.from_mpi()
        group = _gloo_over_mpi(MPI.COMM_WORLD) if want_gloo else None
        return World(comm.rank, comm.world_size, "mpirun", comm, comm.bootstrap, group, True)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        # uccl-run / torchrun: the launcher's store (or one torch creates) on MASTER_PORT
        # serves both torch's gloo group and uccl's bootstrap.
        import torch.distributed as dist
        from torch.distributed.distributed_c10d import _get_default_store

        from uccl.transport import StoreBootstrap

        dist.init_process_group("gloo")
        rank, size = dist.get_rank(), dist.get_world_size()
        boot = StoreBootstrap(_get_default_store(), rank, size, prefix="uccl-perf")
        comm = Communicator(boot)
        return World(rank, size, "env", comm, boot, dist.group.WORLD, size == 1)
    comm = Communicator()  # a world of one
    group = None
    if want_gloo:
        import torch.distributed as dist

        store = dist.TCPStore("127.0.0.1", 0, 1, is_master=True, wait_for_workers=False)
        dist.init_process_group("gloo", store=store, rank=0, world_size=1)
        group = dist.group.WORLD
    return World(0, 1, "single", comm, comm.bootstrap, group, want_mpi)
