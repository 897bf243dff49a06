"""The engine behind the nccl-tests-style scripts (all_reduce_perf.py, ...).

Same flags, columns and busbw factors as NVIDIA's nccl-tests; every size is timed
through uccl's Communicator and, with --compare, through torch's gloo ProcessGroup and
MPI (mpi4py) in the same run, size by size, so that the ratios hold on a noisy machine.

Launch with `mpirun -np N python perf/X_perf.py ...` (bootstrap through mpi4py), with
`uccl-run --nproc-per-node N perf/X_perf.py ...` / torchrun (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT: rendezvous through torch's store), or alone (a world of one).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import socket
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import human, parse_size, plot_series  # noqa: E402

# --------------------------------------------------------------------------------------
# Collectives: element counts and bus-bandwidth factors exactly as nccl-tests defines them
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Coll:
    name: str          # nccl-tests' test name
    reduces: bool      # has a reduction op (redop column)
    rooted: bool       # has a root (root column)
    factor: Callable[[int], float]  # busbw = algbw * factor(nranks)

    def counts(self, count: int, n: int) -> tuple[int, int, int]:
        """(send count, recv count, param count) for `count` elements of the size sweep."""
        per = count // n
        if self.name == "all_gather":
            return per, per * n, per
        if self.name == "reduce_scatter":
            return per * n, per, per
        if self.name == "alltoall":
            return per * n, per * n, per
        return count, count, count


COLLS = {
    "all_reduce": Coll("all_reduce", True, False, lambda n: 2 * (n - 1) / n),
    "all_gather": Coll("all_gather", False, False, lambda n: (n - 1) / n),
    "reduce_scatter": Coll("reduce_scatter", True, False, lambda n: (n - 1) / n),
    "alltoall": Coll("alltoall", False, False, lambda n: (n - 1) / n),
    "broadcast": Coll("broadcast", False, True, lambda n: 1.0),
    "reduce": Coll("reduce", True, True, lambda n: 1.0),
    "sendrecv": Coll("sendrecv", False, False, lambda n: 1.0),
}

# nccl-tests' type names (and the numpy spellings); bfloat16 lives in torch tensors.
DTYPES = {"int8": "int8", "uint8": "uint8", "int32": "int32", "int64": "int64", "half": "float16",
          "float16": "float16", "float": "float32", "float32": "float32", "double": "float64",
          "float64": "float64", "bfloat16": "bfloat16"}
NCCL_TYPE_NAME = {"int8": "int8", "uint8": "uint8", "int32": "int32", "int64": "int64", "float16": "half",
                  "float32": "float", "float64": "double", "bfloat16": "bfloat16"}
OPS = ("sum", "prod", "max", "min", "avg")


# --------------------------------------------------------------------------------------
# Buffers: numpy arrays, or torch tensors for bfloat16
# --------------------------------------------------------------------------------------


def alloc(count: int, dtype: str):
    if dtype == "bfloat16":
        import torch

        return torch.zeros(count, dtype=torch.bfloat16)
    return np.zeros(count, dtype=dtype)


def write(buf, values: np.ndarray) -> None:
    if isinstance(buf, np.ndarray):
        buf[...] = values.astype(buf.dtype)
    else:
        import torch

        buf.copy_(torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)))


def read(buf) -> np.ndarray:
    if isinstance(buf, np.ndarray):
        return buf.astype(np.float64)
    return buf.float().numpy().astype(np.float64)


def as_dtype(values: np.ndarray, dtype: str) -> np.ndarray:
    """values rounded to dtype, back in float64 (what a correct result holds)."""
    if dtype == "bfloat16":
        import torch

        return torch.from_numpy(values.astype(np.float32)).to(torch.bfloat16).float().numpy().astype(np.float64)
    return values.astype(dtype).astype(np.float64)


def inputs(rank: int, count: int, op: str, seed: int) -> np.ndarray:
    """Rank `rank`'s input: small integers, so sums/products are exact in every type."""
    i = np.arange(count, dtype=np.int64)
    if op == "prod":
        return ((i + rank + seed) % 2 + 1).astype(np.float64)
    return ((i * 7 + rank * 13 + seed * 3) % 11).astype(np.float64)


def reduce_ref(arrays: list[np.ndarray], op: str, dtype: str) -> np.ndarray:
    stack = np.stack(arrays)
    if op == "sum":
        out = stack.sum(0)
    elif op == "prod":
        out = stack.prod(0)
    elif op == "max":
        out = stack.max(0)
    elif op == "min":
        out = stack.min(0)
    else:  # avg: integer types truncate
        out = stack.sum(0) / len(arrays)
        if dtype.startswith(("int", "uint")):
            out = np.trunc(out)
    if dtype in ("int8", "uint8"):  # wrap around like the native integer kernels
        out = out.astype(np.int64).astype(dtype)
    return as_dtype(out, dtype)


def count_wrong(got: np.ndarray, want: np.ndarray, dtype: str, op: str) -> int:
    if got.shape != want.shape:
        return max(len(got), len(want))
    if op == "avg" and not dtype.startswith(("int", "uint")):
        tol = {"float16": 1e-2, "bfloat16": 1e-2}.get(dtype, 1e-6)
        return int(np.count_nonzero(~np.isclose(got, want, rtol=tol, atol=tol)))
    return int(np.count_nonzero(got != want))


# --------------------------------------------------------------------------------------
# Buffers for one (collective, size, in/out-of-place), laid out as nccl-tests does
# --------------------------------------------------------------------------------------


@dataclass
class Case:
    coll: Coll
    rank: int
    nranks: int
    dtype: str
    op: str
    root: int
    inplace: bool
    sendcount: int
    recvcount: int
    send: object = None   # view the collective reads
    recv: object = None   # view the collective writes (in place: a view of `full`)
    full: object = None   # in place: the one buffer both views live in

    @classmethod
    def make(cls, coll: Coll, count: int, rank: int, n: int, dtype: str, op: str, root: int, inplace: bool):
        sc, rc, _ = coll.counts(count, n)
        c = cls(coll, rank, n, dtype, op, root, inplace, sc, rc)
        if not inplace:
            c.send, c.recv = alloc(sc, dtype), alloc(rc, dtype)
        else:
            c.full = alloc(max(sc, rc), dtype)
            if coll.name == "all_gather":
                c.send, c.recv = c.full[rank * sc:(rank + 1) * sc], c.full
            elif coll.name == "reduce_scatter":
                c.send, c.recv = c.full, c.full[rank * rc:(rank + 1) * rc]
            else:
                c.send = c.recv = c.full
        return c

    def init(self, seed: int) -> None:
        """Fills the input with this rank's data (and poisons the output)."""
        if self.recv is not self.send and not self.inplace:
            write(self.recv, np.full(self.recvcount, 99.0))
        write(self.send, inputs(self.rank, self.sendcount, self.op, seed))

    def expected(self, seed: int) -> np.ndarray:
        n, r, name = self.nranks, self.rank, self.coll.name
        per = self.coll.counts(max(self.sendcount, self.recvcount), n)[2]
        ins = lambda rk: as_dtype(inputs(rk, self.sendcount, self.op, seed), self.dtype)  # noqa: E731
        if name == "all_reduce":
            return reduce_ref([ins(k) for k in range(n)], self.op, self.dtype)
        if name == "reduce_scatter":
            return reduce_ref([ins(k) for k in range(n)], self.op, self.dtype)[r * per:(r + 1) * per]
        if name == "all_gather":
            return np.concatenate([ins(k) for k in range(n)])
        if name == "alltoall":
            return np.concatenate([ins(k)[r * per:(r + 1) * per] for k in range(n)])
        if name == "broadcast":
            return ins(self.root)
        if name == "reduce":
            return reduce_ref([ins(k) for k in range(n)], self.op, self.dtype)
        if name == "sendrecv":
            return ins((r - 1) % n)
        raise ValueError(name)

    def wrong(self, result, seed: int) -> int:
        if self.coll.name == "reduce" and self.rank != self.root:
            return 0
        return count_wrong(read(result), self.expected(seed), self.dtype, self.op)


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


# --------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------


def _agg(values: list[float], how: int) -> float:
    return {0: values[0], 1: sum(values) / len(values), 2: min(values), 3: max(values)}[how]


def bench(world: World, backend, c: Case, args, seed: int) -> dict:
    """One cell of the table: time `iters` back-to-back calls after `warmup`, then
    check one fresh call against the reference (as nccl-tests does)."""
    try:
        fn, result = backend.prepare(c)
        err = None
    except Unsupported as exc:
        fn, err = None, str(exc)
    # Every rank must agree before anyone runs (a backend may refuse on one rank only).
    errs = [pickle.loads(b) for b in world.control.allgather(pickle.dumps(err))]
    if any(errs):
        return {"time_us": None, "algbw": None, "busbw": None, "wrong": None,
                "note": next(e for e in errs if e)}
    if args.check:
        c.init(seed)
    for _ in range(args.warmup):
        fn()
    backend.barrier()
    t0 = time.perf_counter()
    for _ in range(args.iters):
        fn()
    dt = (time.perf_counter() - t0) / max(args.iters, 1)
    wrong = 0
    for k in range(args.check):
        c.init(seed + 1 + k)
        backend.barrier()
        fn()
        wrong = c.wrong(result, seed + 1 + k)
        if wrong:
            break
    gathered = [pickle.loads(b) for b in world.control.allgather(pickle.dumps((dt, wrong)))]
    sec = _agg([g[0] for g in gathered], args.average)
    wrong = sum(g[1] for g in gathered) if args.check else None
    nbytes = max(c.sendcount, c.recvcount) * itemsize(c.dtype)
    algbw = nbytes / 1e9 / sec if sec > 0 else 0.0
    return {"time_us": sec * 1e6, "algbw": algbw, "busbw": algbw * c.coll.factor(c.nranks), "wrong": wrong}


def itemsize(dtype: str) -> int:
    return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize


def sizes_from(args) -> list[int]:
    sizes, s = [], args.minbytes
    while s <= args.maxbytes:
        sizes.append(s)
        if args.stepfactor > 1:
            s *= args.stepfactor
        elif args.stepbytes > 0:
            s += args.stepbytes
        else:
            break
    return sizes


# --------------------------------------------------------------------------------------
# Output in nccl-tests' format
# --------------------------------------------------------------------------------------


def fmt_time(us: Optional[float]) -> str:
    if us is None:
        return "N/A"
    if us >= 10000:
        return f"{us:7.0f}"
    if us >= 100:
        return f"{us:7.1f}"
    return f"{us:7.2f}"


def header_lines() -> list[str]:
    return [
        "# %10s  %12s  %8s  %6s  %6s           out-of-place                       in-place          "
        % ("", "", "", "", ""),
        "# %10s  %12s  %8s  %6s  %6s  %7s  %6s  %6s %6s  %7s  %6s  %6s %6s"
        % ("size", "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong", "time", "algbw", "busbw",
           "#wrong"),
        "# %10s  %12s  %8s  %6s  %6s  %7s  %6s  %6s  %5s  %7s  %6s  %6s  %5s"
        % ("(B)", "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)", "(GB/s)", ""),
    ]


def cell(res: dict) -> str:
    if res["time_us"] is None:
        return "  %7s  %6s  %6s  %5s" % ("N/A", "N/A", "N/A", "N/A")
    wrong = "N/A" if res["wrong"] is None else str(res["wrong"])
    return "  %7s  %6.2f  %6.2f  %5s" % (fmt_time(res["time_us"]), res["algbw"], res["busbw"], wrong)


def row_line(row: dict, backend: str) -> str:
    return ("%12i  %12i  %8s  %6s  %6i" % (row["size"], row["count"], row["type"], row["redop"], row["root"])
            + cell(row[backend]["out"]) + cell(row[backend]["in"]))


def summary(rows: list[dict], backend: str) -> tuple[int, float]:
    bws = [row[backend][m]["busbw"] for row in rows for m in ("out", "in") if row[backend][m]["busbw"] is not None]
    errors = sum(1 for row in rows for m in ("out", "in") if row[backend][m]["wrong"])
    return errors, (sum(bws) / len(bws) if bws else 0.0)


def ratio(a: Optional[float], b: Optional[float]) -> str:
    return "%7.2f" % (a / b) if a and b else "%7s" % "N/A"


def ratio_lines(rows: list[dict], peer: str) -> list[str]:
    out = [f"# uccl busbw / {peer} busbw (above 1: uccl is faster)",
           "# %10s  %8s  %8s" % ("size", "out", "in")]
    for row in rows:
        out.append("%12i  %8s  %8s" % (row["size"], ratio(row["uccl"]["out"]["busbw"], row[peer]["out"]["busbw"]),
                                       ratio(row["uccl"]["in"]["busbw"], row[peer]["in"]["busbw"])))
    return out


def headline(coll: str, row: dict, names: list[str]) -> str:
    """One line per size that matters: each peer's busbw, out-of-place and in-place, and the ratios."""
    parts = []
    for mode, label in (("out", "out-of-place"), ("in", "in-place")):
        u = row["uccl"][mode]
        bits = [f"uccl {fmt_time(u['time_us']).strip()} us {u['busbw'] or 0:.3f} GB/s"]
        for peer in names[1:]:
            p = row[peer][mode]
            bits.append(f"{peer} {fmt_time(p['time_us']).strip()} us {p['busbw'] or 0:.3f} GB/s "
                        f"(x{ratio(u['busbw'], p['busbw']).strip()})")
        parts.append(f"{label}: " + ", ".join(bits))
    return f"# {coll} {human(row['size'])} busbw: " + " | ".join(parts)


def best_busbw(cellpair: dict) -> Optional[float]:
    vals = [cellpair[m]["busbw"] for m in ("out", "in") if cellpair[m]["busbw"] is not None]
    return max(vals) if vals else None


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def parse_args(coll: Coll, argv=None):
    ap = argparse.ArgumentParser(
        prog=f"{coll.name}_perf.py",
        description=f"nccl-tests-style {coll.name} benchmark for uccl (peers: --compare gloo,mpi).")
    ap.add_argument("-b", "--minbytes", type=parse_size, default=32 << 20, help="min size in bytes (32M)")
    ap.add_argument("-e", "--maxbytes", type=parse_size, default=32 << 20, help="max size in bytes (32M)")
    ap.add_argument("-i", "--stepbytes", type=parse_size, default=1 << 20, help="increment size (1M)")
    ap.add_argument("-f", "--stepfactor", type=int, default=1, help="increment factor (1: use -i)")
    ap.add_argument("-n", "--iters", type=int, default=20, help="iteration count (20)")
    ap.add_argument("-w", "--warmup_iters", dest="warmup", type=int, default=5, help="warmup iteration count (5)")
    ap.add_argument("-c", "--check", type=int, default=1, help="check iteration count (1; 0 = no check)")
    ap.add_argument("-o", "--op", default="sum", choices=OPS, help="reduction op (sum)")
    ap.add_argument("-d", "--datatype", default="float", choices=sorted(DTYPES), help="data type (float)")
    ap.add_argument("-r", "--root", type=int, default=0, help="root rank (0)")
    ap.add_argument("-a", "--average", type=int, default=3, choices=(0, 1, 2, 3),
                    help="time over ranks: 0=rank 0, 1=avg, 2=min, 3=max (3; nccl-tests defaults to 1)")
    ap.add_argument("--compare", default="", help="peers run in the same run: gloo,mpi")
    ap.add_argument("--json", help="write every row here (and a PNG plot beside it)")
    ap.add_argument("--plot", help="PNG of busbw against size (default: beside --json)")
    args = ap.parse_args(argv)
    args.dtype = DTYPES[args.datatype]
    args.peers = [p for p in (s.strip().lower() for s in args.compare.split(",")) if p]
    for p in args.peers:
        if p not in ("gloo", "mpi"):
            ap.error(f"--compare: unknown peer {p!r} (gloo, mpi)")
    if args.minbytes > args.maxbytes:
        ap.error(f"invalid sizes for 'minbytes' and 'maxbytes': {args.minbytes} > {args.maxbytes}")
    return args


def main(coll_name: str, argv=None) -> int:
    warnings.filterwarnings("ignore")
    coll = COLLS[coll_name]
    args = parse_args(coll, argv)
    world = setup_world("gloo" in args.peers, "mpi" in args.peers)
    lead = world.rank == 0
    say = (lambda *a: print(*a, flush=True)) if lead else (lambda *a: None)
    if not 0 <= args.root < world.size:
        say(f"# invalid root {args.root} for {world.size} ranks")
        return 2

    backends = [UcclBackend(world.uccl)]
    notes = []
    for p in args.peers:
        if p == "gloo":
            backends.append(GlooBackend(world.gloo_group))
        elif world.mpi_ok:
            backends.append(MpiBackend())
        else:
            notes.append("mpi skipped: not launched by mpirun")
    names = [b.name for b in backends]

    sizes = sizes_from(args)
    say(f"# nThread 1 nGpus 1 minBytes {args.minbytes} maxBytes {args.maxbytes} step: "
        f"{args.stepfactor if args.stepfactor > 1 else args.stepbytes}"
        f"({'factor' if args.stepfactor > 1 else 'bytes'}) warmup iters: {args.warmup} iters: {args.iters} "
        f"agg iters: 1 validation: {args.check} graph: 0")
    say("#")
    say(f"# {coll.name}: {world.size} ranks via {world.how}; backends: {', '.join(names)}; "
        f"time = {['rank 0', 'average', 'min', 'max'][args.average]} over ranks")
    lines = [pickle.loads(b) for b in world.control.allgather(pickle.dumps(
        f"#  Rank {world.rank:2d} Group  0 Pid {os.getpid():6d} on {socket.gethostname():>10s} device  cpu"))]
    for line in lines:
        say(line)
    for note in notes:
        say(f"# {note}")
    say("#")
    say(f"# uccl")
    for h in header_lines():
        say(h)

    esize = itemsize(args.dtype)
    redop = args.op if coll.reduces else "none"
    root = args.root if coll.rooted else -1
    rows = []
    for i, size in enumerate(sizes):
        count = size // esize
        _, _, pc = coll.counts(count, world.size)
        sc, rc, _ = coll.counts(count, world.size)
        row = {"size": max(sc, rc) * esize, "count": pc, "type": NCCL_TYPE_NAME[args.dtype], "redop": redop,
               "root": root}
        for backend in backends:
            row[backend.name] = {}
            for mode, inplace in (("out", False), ("in", True)):
                case = Case.make(coll, count, world.rank, world.size, args.dtype, args.op, args.root, inplace)
                row[backend.name][mode] = bench(world, backend, case, args, seed=i)
        rows.append(row)
        say(row_line(row, "uccl"))

    errors, avg = summary(rows, "uccl")
    say(f"# Out of bounds values : {errors} {'FAILED' if errors else 'OK'}")
    say(f"# Avg bus bandwidth    : {avg:g} ")
    say("#")
    failed = errors
    for peer in names[1:]:
        say("")
        say(f"# {peer} (same sizes, same run)")
        for h in header_lines():
            say(h)
        for row in rows:
            say(row_line(row, peer))
        perrs, pavg = summary(rows, peer)
        failed += perrs
        say(f"# Out of bounds values : {perrs} {'FAILED' if perrs else 'OK'}")
        say(f"# Avg bus bandwidth    : {pavg:g} ")
        say("#")
    for peer in names[1:]:
        say("")
        for line in ratio_lines(rows, peer):
            say(line)
    if len(names) > 1:
        say("")
        for target in (8, 16 << 20):
            row = next((r for r in rows if r["size"] == target), None)
            if row is not None:
                say(headline(coll.name, row, names))

    if lead and (args.json or args.plot):
        meta = {"benchmark": f"{coll.name}_perf", "collective": coll.name, "ranks": world.size, "launch": world.how,
                "backends": names, "dtype": args.dtype, "op": redop, "root": root, "iters": args.iters,
                "warmup": args.warmup, "check": args.check, "time_over_ranks": ["rank0", "avg", "min", "max"][
                    args.average], "host": socket.gethostname(), "cpus": os.cpu_count(),
                "env": {k: v for k, v in os.environ.items() if k.startswith("UCCL_")},
                "when": time.strftime("%Y-%m-%d %H:%M:%S")}
        if args.json:
            with open(args.json, "w") as f:
                json.dump({**meta, "rows": rows}, f, indent=1)
        plot = args.plot or os.path.splitext(args.json)[0] + ".png"
        series = {}
        for name in names:
            for mode, label in (("out", "out-of-place"), ("in", "in-place")):
                pts = [(r["size"], r[name][mode]["busbw"]) for r in rows if r[name][mode]["busbw"]]
                if pts:
                    series[f"{name} {label}"] = pts
        plot_series(plot, f"{coll.name}, {world.size} ranks: busbw", series, ylabel="busbw (GB/s)")
        say(f"# wrote {args.json or ''} {plot}")
    world.control.barrier()
    return 1 if failed else 0


def run(coll_name: str) -> None:
    sys.exit(main(coll_name))
