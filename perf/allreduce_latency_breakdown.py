"""Where an 8-byte all_reduce's time goes: Python argument handling vs native code.

    mpirun -np 2 python perf/allreduce_latency_breakdown.py [--bytes 8] [--iters 3000] [--repeat 5]

Times, in the same run and best of --repeat blocks: Communicator.all_reduce (the public
call), the native all_reduce called with pre-computed addresses (no Python buffer/dtype
handling), the native barrier, and MPI_Allreduce (mpi4py) on the same buffers. A
diagnostic: it reaches into Communicator's private members on purpose.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def best_us(fn, barrier, iters: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        for _ in range(min(iters, 100)):
            fn()
        barrier()
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        best = min(best, (time.perf_counter() - t0) / iters * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bytes", type=int, default=8)
    ap.add_argument("--iters", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    from mpi4py import MPI

    from uccl.collectives import Communicator
    from uccl import _native

    mpi = MPI.COMM_WORLD
    comm = Communicator.from_mpi()
    n = max(1, args.bytes // 4)
    a, b = np.ones(n, np.float32), np.empty(n, np.float32)
    sa, ra, nat = a.ctypes.data, b.ctypes.data, comm._native
    all_reduce_at = _native.tools.all_reduce_at_addresses
    cases = {
        "Communicator.all_reduce(a, b)": (lambda: comm.all_reduce(a, b), comm.barrier),
        "native all_reduce, addresses pre-computed": (
            lambda: all_reduce_at(nat, sa, ra, n, _native.DataType.float32, _native.ReduceOp.sum, False), comm.barrier),
        "native barrier": (lambda: nat.barrier(False), comm.barrier),
        "MPI_Allreduce (mpi4py)": (lambda: mpi.Allreduce(a, b), mpi.Barrier),
    }
    results = {name: best_us(fn, bar, args.iters, args.repeat) for name, (fn, bar) in cases.items()}
    worst = {name: mpi.allreduce(v, op=MPI.MAX) for name, v in results.items()}
    if comm.rank == 0:
        algo, chunk, _ = comm.algorithm("all_reduce", n * 4)
        print(f"# {n * 4}-byte all_reduce, {comm.world_size} ranks, algorithm {algo}; "
              f"best of {args.repeat} x {args.iters} calls, max over ranks")
        for name, us in worst.items():
            print(f"{name:48s} {us:9.2f} us")


if __name__ == "__main__":
    main()
