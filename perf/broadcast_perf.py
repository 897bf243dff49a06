"""nccl-tests' broadcast_perf for uccl: `mpirun -np 2 python perf/broadcast_perf.py -b 8 -e 64M -f 2 --compare gloo,mpi`
(flags and columns as nccl-tests; see perf/_nccl_tests.py)."""

from _nccl_tests import run

if __name__ == "__main__":
    run("broadcast")
