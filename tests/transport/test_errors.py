"""Every refused access, bad argument, timeout and dead peer gives a clear error."""

import os
import pickle

import numpy as np
import pytest

from uccl.errors import AccessError, InvalidArgumentError, MismatchError, PeerFailureError, UcclTimeoutError
from uccl.testing import run_ranks
from uccl.transport import Endpoint


def expect(exc_type, fn, *needles):
    with pytest.raises(exc_type) as info:
        fn()
    for needle in needles:
        assert needle in str(info.value), f"{needle!r} not in {info.value}"
    return str(info.value)


def access_errors(ctx):
    """Rank 1 offers regions; rank 0 tries every forbidden access. Memory stays untouched."""
    ep = Endpoint(ctx.bootstrap)
    target = np.full(64, 0xAB, np.uint8)
    if ctx.rank == 1:
        writable = ep.register(target, "w")
        readonly_region = ep.register(np.full(64, 0xAB, np.uint8), "r")
        gone = ep.register(np.full(64, 0xAB, np.uint8), "w")
        keys = (writable.key, readonly_region.key, gone.key)
        gone.deregister()
        ctx.bootstrap.broadcast(pickle.dumps(keys), root=1)
        ctx.bootstrap.barrier()  # rank 0 has tried everything
        assert (target == 0xAB).all() and (readonly_region.buffer == 0xAB).all() and (gone.buffer == 0xAB).all()
        assert not ep.poll(), "a refused write must not reach the completion queue"
        return "ok"
    w_key, r_key, gone_key = pickle.loads(ctx.bootstrap.broadcast(None, root=1))
    src = ep.register(np.ones(128, np.uint8), "")
    messages = [
        expect(AccessError, lambda: ep.write(1, src, w_key, length=65), "rank 0", "write", "rank 1", "outside"),
        expect(AccessError, lambda: ep.write(1, src, w_key, length=8, remote_offset=60), "outside"),
        expect(AccessError, lambda: ep.write(1, src, w_key ^ (1 << 40), length=8), "not registered"),
        expect(AccessError, lambda: ep.write(1, src, gone_key, length=8), "not registered"),
        expect(AccessError, lambda: ep.write(1, src, r_key, length=8), "does not grant remote write"),
        expect(AccessError, lambda: ep.read(1, src, w_key, length=8), "does not grant remote read"),
        expect(AccessError, lambda: ep.write(1, src, w_key, length=8, offset=124), "local region"),
    ]
    ctx.bootstrap.barrier()
    return messages


def test_forbidden_accesses_are_refused_and_touch_nothing():
    messages, ok = run_ranks(access_errors, 2)
    assert ok == "ok" and len(messages) == 7


def bad_arguments(ctx):
    ep = Endpoint(ctx.bootstrap)
    floats = ep.register(np.zeros(16, np.float32), "w")
    expect(InvalidArgumentError, lambda: ep.write(1 - ctx.rank, floats, floats.key, length=-4), "length", ">= 0")
    expect(InvalidArgumentError, lambda: ep.write(1 - ctx.rank, floats, floats.key, length=6), "item size 4")
    expect(InvalidArgumentError, lambda: ep.write(1 - ctx.rank, floats, floats.key, offset=2, length=4), "offset")
    frozen = np.zeros(8, np.uint8)
    frozen.flags.writeable = False
    expect(InvalidArgumentError, lambda: ep.register(frozen, "w"), "read-only")
    expect(InvalidArgumentError, lambda: ep.register(b"immutable bytes", "w"), "read-only")
    expect(InvalidArgumentError, lambda: ep.recv(0, b"immutable"), "read-only")
    expect(InvalidArgumentError, lambda: ep.register(np.zeros((4, 4))[:, 1], "w"), "contiguous")
    expect(InvalidArgumentError, lambda: ep.register(object()), "buffer")
    expect(InvalidArgumentError, lambda: ep.register(np.zeros(4), "x"), "access")
    expect(InvalidArgumentError, lambda: ep.send(5, np.zeros(4)), "peer rank 5")
    expect(InvalidArgumentError, lambda: ep.write(0, floats, floats.key, imm=2**32), "imm")
    ro = ep.register(np.zeros(4, np.uint8), "")
    ro.deregister()
    expect(InvalidArgumentError, lambda: ep._native.deregister_region(ro.key), "not registered")
    ctx.bootstrap.barrier()
    return "ok"


def test_bad_arguments():
    assert run_ranks(bad_arguments, 2) == ["ok", "ok"]


def silent_peer(ctx):
    ep = Endpoint(ctx.bootstrap)
    if ctx.rank == 0:
        expect(UcclTimeoutError, lambda: ep.recv(1, np.zeros(4), tag=11).wait(timeout=0.3),
                     "rank 0", "recv(tag=11) from rank 1", "timed out")
        expect(UcclTimeoutError, lambda: ep.wait_remote_write(1, timeout=0.2), "remote write from rank 1")
    ctx.bootstrap.barrier()
    return "ok"


def test_peer_that_never_answers_times_out_naming_peer_and_operation():
    assert run_ranks(silent_peer, 2) == ["ok", "ok"]


def dying_peer(ctx):
    ep = Endpoint(ctx.bootstrap)
    if ctx.rank == 1:
        os._exit(3)  # dies without a word
    msg = expect(PeerFailureError, lambda: ep.recv(1, np.zeros(4)).wait(timeout=30), "rank 1", "died")
    return msg


def test_dead_peer_is_reported_long_before_the_timeout():
    import time

    start = time.monotonic()
    msg, _ = run_ranks(dying_peer, 2, timeout=60, may_die=(1,))
    assert "rank 0" in msg and "rank 1 has died" in msg
    assert time.monotonic() - start < 25  # the wait's own timeout was 30 s


def truncated_message(ctx):
    ep = Endpoint(ctx.bootstrap)
    if ctx.rank == 0:
        ep.send(1, np.zeros(100, np.uint8), tag=1).wait()
    else:
        expect(MismatchError, lambda: ep.recv(0, np.zeros(10, np.uint8), tag=1).wait(timeout=10),
               "100 bytes", "10-byte buffer")
    ctx.bootstrap.barrier()
    return "ok"


def test_message_larger_than_buffer_is_an_error():
    assert run_ranks(truncated_message, 2) == ["ok", "ok"]


def shm_listing():
    """uccl's entries in /dev/shm (other programs, e.g. OpenMPI, may come and go meanwhile)."""
    names = os.listdir("/dev/shm") if os.path.isdir("/dev/shm") else []
    return sorted(n for n in names if "uccl" in n.lower())


def test_no_shared_memory_left_behind_even_after_failures():
    before = shm_listing()
    run_ranks(access_errors, 2)
    run_ranks(dying_peer, 2, timeout=30, may_die=(1,))
    assert shm_listing() == before
