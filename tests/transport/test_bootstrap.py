"""The three bootstrap implementations, and the buffer kinds an endpoint accepts."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from uccl.errors import UcclTimeoutError
from uccl.testing import run_ranks
from uccl.transport import Endpoint, StoreBootstrap, TCPStore


def test_builtin_store_set_get_add_delete_and_timeout():
    server = TCPStore("127.0.0.1", 0, is_master=True, timeout=0.3)
    client = TCPStore("127.0.0.1", server.port, timeout=0.3)
    try:
        client.set("k", b"v")
        assert server.get("k") == b"v"
        assert client.add("n", 2) == 2 and server.add("n", 3) == 5
        assert client.delete_key("k") and not client.delete_key("k")
        with pytest.raises(UcclTimeoutError, match="'never'"):
            client.get("never")
    finally:
        client.close()
        server.close()


def test_unreachable_store_times_out_clearly():
    with pytest.raises(UcclTimeoutError, match="could not reach"):
        TCPStore("127.0.0.1", 1, timeout=0.3)


class _SilentServer:
    """Accepts store connections and never answers (a hung or stopped store host)."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:  # a client still blocked reading gets end-of-stream
            c.close()


def _bounded(call, limit: float):
    """Runs call() on a thread; (finished, what it returned or raised). A call that never
    returns is reported as unfinished instead of hanging the test."""
    import threading

    out: dict = {}

    def run() -> None:
        try:
            out["value"] = call()
        except BaseException as exc:
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit)
    return not t.is_alive(), out


@pytest.mark.parametrize("op", ["get", "set", "add", "delete_key"])
def test_store_that_never_answers_times_out_naming_key_and_address(op):
    silent = _SilentServer()
    try:
        client = TCPStore("127.0.0.1", silent.port, timeout=0.5)
        args = {"get": ("the-key",), "set": ("the-key", b"v"), "add": ("the-key", 1), "delete_key": ("the-key",)}[op]
        finished, out = _bounded(lambda: getattr(client, op)(*args), 15.0)
        assert finished, f"store {op} on a server that never answers did not return within 15 s (timeout 0.5 s)"
        err = out.get("error")
        assert isinstance(err, UcclTimeoutError), f"store {op}: expected UcclTimeoutError, got {out}"
        assert "'the-key'" in str(err) and f"127.0.0.1:{silent.port}" in str(err), str(err)
        # The late reply can no longer be taken for the next call's: the client reconnects.
        finished, out = _bounded(lambda: client.get("other"), 15.0)
        assert finished and isinstance(out.get("error"), UcclTimeoutError), out
        client.close()
    finally:
        silent.close()


def exchange_over(ctx, kind, path):
    """Builds an endpoint through a torch store and moves a torch tensor and a bytearray."""
    import torch
    import torch.distributed as dist

    if kind == "file":
        store = dist.FileStore(path, ctx.world_size)
    elif ctx.rank == 0:  # the server binds a port of its own choosing and tells the others
        store = dist.TCPStore("127.0.0.1", 0, ctx.world_size, is_master=True, wait_for_workers=False)
        ctx.store.set("torch-store-port", str(store.port))
    else:
        store = dist.TCPStore("127.0.0.1", int(ctx.store.get("torch-store-port")), ctx.world_size, is_master=False)
    ep = Endpoint(StoreBootstrap(store, ctx.rank, ctx.world_size, prefix=f"t-{kind}"))
    peer = 1 - ctx.rank
    inbox = torch.zeros(1000, dtype=torch.float64)
    region = ep.register(inbox, "w")
    keys = StoreBootstrap(store, ctx.rank, ctx.world_size, prefix="keys").allgather(str(region.key).encode())
    src = ep.register(torch.arange(1000, dtype=torch.float64) * (ctx.rank + 1), "")
    ep.write(peer, src, int(keys[peer]), imm=1).wait()
    ep.wait_remote_write(peer, timeout=30)
    assert torch.equal(inbox, torch.arange(1000, dtype=torch.float64) * (peer + 1))
    msg = bytearray(b"x" * 10)
    ep.send(peer, bytearray(f"hello {ctx.rank}".encode())).wait()
    c = ep.recv(peer, msg).wait(timeout=30)
    assert bytes(msg[:c.len]) == f"hello {peer}".encode()
    # The last barrier goes through the runner's store (hosted by the parent): rank 0's
    # torch store must not disappear while rank 1 still reads from it.
    ctx.bootstrap.barrier()
    return "ok"


def test_torch_file_store(tmp_path):
    pytest.importorskip("torch")
    assert run_ranks(exchange_over, 2, ("file", str(tmp_path / "store"))) == ["ok", "ok"]


def test_torch_tcp_store():
    pytest.importorskip("torch")
    assert run_ranks(exchange_over, 2, ("tcp", "")) == ["ok", "ok"]


MPI_PROGRAM = textwrap.dedent("""
    import numpy as np
    from uccl.transport import Endpoint, MPIBootstrap, bootstrap_from_env
    boot = bootstrap_from_env()
    assert isinstance(boot, MPIBootstrap), type(boot)
    ep = Endpoint(boot)
    r, w = boot.rank, boot.world_size
    got = np.zeros(1, np.int64)
    ep.send((r + 1) % w, np.array([r], np.int64), tag=3).wait()
    ep.recv((r - 1) % w, got, tag=3).wait(timeout=30)
    assert got[0] == (r - 1) % w
    sub = boot.split(r % 2, key=-r)
    assert sub.world_size == len(range(r % 2, w, 2))
    print("rank", r, "ok", flush=True)
""")


def test_mpi_bootstrap_under_mpirun(mpirun):
    pytest.importorskip("mpi4py")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "MASTER_"))}
    out = subprocess.run(mpirun + ["-np", "3", sys.executable, "-c", MPI_PROGRAM], capture_output=True, text=True,
                         timeout=180, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert sorted(line for line in out.stdout.splitlines() if "ok" in line) == [f"rank {r} ok" for r in range(3)]


def split_groups(ctx):
    from uccl.collectives import Communicator

    comm = Communicator(ctx.bootstrap)
    sub = comm.split(ctx.rank % 2, key=-ctx.rank)  # reversed order inside each group
    members = [r for r in range(ctx.world_size) if r % 2 == ctx.rank % 2]
    assert sub.world_size == len(members) and sub.rank == sorted(members, reverse=True).index(ctx.rank)
    x = np.array([ctx.rank], np.int64)
    sub.all_reduce(x)
    assert x[0] == sum(members)
    none = comm.split(None if ctx.rank == 0 else 1)
    assert (none is None) == (ctx.rank == 0)
    return "ok"


def test_split_forms_independent_groups():
    assert run_ranks(split_groups, 4) == ["ok"] * 4
