"""Wrong arguments raise InvalidArgumentError naming the rank, the operation and the
cause, before anything is sent (a world of one: no peers needed to get there)."""

from __future__ import annotations

import numpy as np
import pytest

from uccl.collectives import Communicator
from uccl.errors import InvalidArgumentError


@pytest.fixture(scope="module")
def comm(monkeypatch_module):
    return Communicator.from_env()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE",
                    "SLURM_NTASKS"):
            mp.delenv(var, raising=False)
        yield mp


f32 = lambda n: np.zeros(n, np.float32)  # noqa: E731

CASES = [
    ("all_reduce", lambda c: c.all_reduce(f32(4), f32(5)), "output has 5 elements"),
    ("all_reduce", lambda c: c.all_reduce(f32(4), np.zeros(4, np.int32)), "input is float32 but output is int32"),
    ("all_reduce", lambda c: c.all_reduce(f32(4), op="xor"), "unsupported reduce op 'xor'"),
    ("all_reduce", lambda c: c.all_reduce(np.zeros(4, bool), op="avg"), "avg is not defined for bool"),
    ("all_reduce", lambda c: c.all_reduce(np.zeros(4, np.complex64)), "not supported"),
    ("all_reduce", lambda c: c.all_reduce(f32(8)[::2]), "contiguous"),
    ("all_reduce", lambda c: c.all_reduce(f32(4), object()), "neither a tensor nor a buffer"),
    ("reduce", lambda c: c.reduce(f32(4), root=3), "root 3 is outside world of size 1"),
    ("reduce", lambda c: c.reduce(f32(4), f32(2), root=0), "output has 2 elements"),
    ("broadcast", lambda c: c.broadcast(np.zeros(4, np.float32), root=-1), "root -1"),
    ("all_gather", lambda c: c.all_gather(f32(4), f32(3)), "output has 3 elements"),
    ("all_gather_v", lambda c: c.all_gather_v(f32(4), f32(4), [4, 1]), "counts has 2 entries for 1 ranks"),
    ("all_gather_v", lambda c: c.all_gather_v(f32(4), f32(4), [3]), "input has 4 elements but counts[0] = 3"),
    ("all_gather_v", lambda c: c.all_gather_v(f32(4), f32(4), [4], [2]), "output of 4 elements is too small"),
    ("reduce_scatter", lambda c: c.reduce_scatter(f32(4), f32(3)), "input has 4 elements"),
    ("reduce_scatter_v", lambda c: c.reduce_scatter_v(f32(4), f32(4), [-1]), "counts[0] is negative"),
    ("reduce_scatter_v", lambda c: c.reduce_scatter_v(f32(4), f32(4), [5]), "counts sum to 5"),
    ("all_to_all", lambda c: c.all_to_all(f32(4), f32(5)), "must have the same size"),
    ("all_to_all_v", lambda c: c.all_to_all_v(f32(4), [5], f32(5), [5]), "send counts reach element 5 of an input of 4"),
    ("all_to_all_v", lambda c: c.all_to_all_v(f32(4), [4], f32(4), [4], None, [1]), "recv counts reach element 5"),
    ("all_to_all_v", lambda c: c.all_to_all_v(f32(4), [4, 0], f32(4), [4]), "send_counts has 2 entries"),
    ("gather", lambda c: c.gather(f32(4), None, root=0), "the root needs an output"),
    ("gather", lambda c: c.gather(f32(4), f32(3), root=0), "output must be 1 x 4 elements, got 3"),
    ("scatter", lambda c: c.scatter(None, f32(4), root=0), "the root needs an input"),
    ("scatter", lambda c: c.scatter(f32(3), f32(4), root=0), "input must be 1 x 4 elements, got 3"),
]


@pytest.mark.parametrize("op,call,cause", CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_bad_argument_names_rank_op_and_cause(comm, op, call, cause):
    with pytest.raises(InvalidArgumentError) as info:
        call(comm)
    msg = str(info.value)
    assert msg.startswith("rank 0: "), msg
    assert op in msg and cause in msg, msg


def test_read_only_output_is_refused(comm):
    out = f32(4)
    out.flags.writeable = False
    with pytest.raises(InvalidArgumentError, match="rank 0: all_reduce: output"):
        comm.all_reduce(f32(4), out)


def test_communicator_still_works_after_bad_calls(comm):
    x = np.arange(5, dtype=np.float32)
    assert np.array_equal(comm.all_reduce(x, f32(5)), x)
