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
    ("all_reduce", lambda c: c.all_reduce(f32(4), object()),
     "output: <class 'object'> is neither a tensor nor a buffer"),
    ("all_reduce", lambda c: c.all_reduce(bytearray(4), bytes(4)), "output: buffer is read-only"),
    ("all_reduce", lambda c: c.all_reduce(bytes(4)), "buffer: buffer is read-only"),
    ("reduce", lambda c: c.reduce(f32(4), root=3), "root 3 is outside world of size 1"),
    ("reduce", lambda c: c.reduce(f32(4), f32(2), root=0), "output has 2 elements"),
    ("broadcast", lambda c: c.broadcast(np.zeros(4, np.float32), root=-1), "root -1"),
    ("all_gather", lambda c: c.all_gather(f32(4), f32(3)), "output has 3 elements"),
    ("all_gather_v", lambda c: c.all_gather_v(f32(4), f32(4), [4, 1]), "counts has 2 entries for 1 ranks"),
    ("all_gather_v", lambda c: c.all_gather_v(f32(4), f32(4), [3]), "input has 4 elements but counts[0] = 3"),
    ("all_gather_v", lambda c: c.all_gather_v(f32(4), f32(4), [4], [2]), "output of 4 elements is too small"),
    ("all_gather_v", lambda c: c.all_gather_v(f32(4), f32(4), [4], []), "displs has 0 entries for 1 ranks"),
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
    ("all_reduce", lambda c: c.all_reduce(f32(4), f32(5), async_op=True), "output has 5 elements"),
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


def test_torch_tensors_are_decoded_by_the_same_checks(comm):
    torch = pytest.importorskip("torch")
    cases = [
        (lambda: comm.all_reduce(torch.zeros(4, dtype=torch.complex64)),
         "buffer: tensor dtype torch.complex64 is not supported"),
        (lambda: comm.all_reduce(torch.zeros(4, 4)[:, 1]), "buffer: tensor is not contiguous"),
        (lambda: comm.all_reduce(torch.zeros(4), torch.zeros(4, dtype=torch.int64)),
         "input is float32 but output is int64"),
        (lambda: comm.all_gather(torch.zeros(4), torch.zeros(3)), "output has 3 elements, expected 1 x 4"),
    ]
    for call, cause in cases:
        with pytest.raises(InvalidArgumentError) as info:
            call()
        assert str(info.value).startswith("rank 0: all_") and cause in str(info.value), str(info.value)


def test_native_callers_get_the_same_checks(comm):
    """The checks live in the native Communicator: a call that skips the Python decoding
    (the benchmark hook on raw addresses) is refused the same way."""
    from uccl import _native

    a = np.zeros(4, bool)
    with pytest.raises(InvalidArgumentError, match="rank 0: all_reduce: avg is not defined for bool"):
        _native.tools.all_reduce_at_addresses(comm._native, a.ctypes.data, a.ctypes.data, 4, _native.DataType.bool,
                                              _native.ReduceOp.avg)


@pytest.mark.parametrize("op,call,cause", [
    ("send", lambda ep: ep.send(0, object()), "send: buffer: <class 'object'> is neither a tensor nor a buffer"),
    ("recv", lambda ep: ep.recv(0, b"immutable"), "recv: buffer: buffer is read-only"),
    ("register", lambda ep: ep.register(np.zeros((4, 4))[:, 1]), "register: buffer: ndarray is not C-contiguous"),
], ids=["send", "recv", "register"])
def test_transport_buffers_name_rank_op_and_cause(comm, op, call, cause):
    with pytest.raises(InvalidArgumentError) as info:
        call(comm.endpoint)
    assert str(info.value) == f"rank 0: {cause}", str(info.value)
