"""A small key-value store over TCP, so the core needs neither torch nor MPI to
bootstrap. Same shape as torch.distributed's Store: set / get (blocking) / add."""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
import time

from uccl.errors import PeerFailureError, UcclTimeoutError

_SET, _GET, _ADD, _DELETE = range(4)
_OPS = {_SET: "set", _GET: "get", _ADD: "add", _DELETE: "delete"}
_OK, _TIMEOUT = 0, 1
_REPLY_SLACK_S = 2.0  # a get's reply may come this much after the server's own wait for the key


class _Deadline:
    """Bounds a client's socket operations: each gets the time left (socket.timeout after)."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self.sock, self.end = sock, time.monotonic() + seconds

    def arm(self) -> None:
        left = self.end - time.monotonic()
        if left <= 0:
            raise socket.timeout("deadline passed")
        self.sock.settimeout(left)


def _recv_exact(sock: socket.socket, n: int, deadline: "_Deadline | None" = None) -> bytes:
    chunks = []
    while n:
        if deadline is not None:
            deadline.arm()
        chunk = sock.recv(n)
        if not chunk:
            raise ConnectionError("store connection closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _send_frame(sock: socket.socket, *fields: bytes, deadline: "_Deadline | None" = None) -> None:
    if deadline is not None:
        deadline.arm()
    sock.sendall(b"".join(struct.pack("!I", len(f)) + f for f in fields))


def _recv_fields(sock: socket.socket, count: int, deadline: "_Deadline | None" = None) -> list[bytes]:
    out = []
    for _ in range(count):
        (n,) = struct.unpack("!I", _recv_exact(sock, 4, deadline))
        out.append(_recv_exact(sock, n, deadline))
    return out


class _State:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.cond = threading.Condition()


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        state: _State = self.server.state  # type: ignore[attr-defined]
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                op, key, arg = _recv_fields(sock, 3)
                op, key = op[0], key.decode()
                with state.cond:
                    if op == _SET:
                        state.data[key] = arg
                        state.cond.notify_all()
                        reply = (_OK, b"")
                    elif op == _GET:
                        timeout = struct.unpack("!d", arg)[0]
                        found = state.cond.wait_for(lambda: key in state.data, timeout)
                        reply = (_OK, state.data[key]) if found else (_TIMEOUT, b"")
                    elif op == _ADD:
                        value = int(state.data.get(key, b"0")) + struct.unpack("!q", arg)[0]
                        state.data[key] = str(value).encode()
                        state.cond.notify_all()
                        reply = (_OK, state.data[key])
                    else:
                        reply = (_OK, b"1" if state.data.pop(key, None) is not None else b"0")
                _send_frame(sock, bytes([reply[0]]), reply[1])
        except (ConnectionError, OSError, struct.error):
            return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class TCPStore:
    """Rank 0 (is_master=True) serves; every rank, the server included, is a client.

    `get` blocks until the key exists or `timeout` seconds pass (UcclTimeoutError). Every
    client call is bounded: a server that stops answering raises UcclTimeoutError naming
    the key and the server's address, and the next call reconnects (a late reply must not
    be taken for its answer).
    """

    def __init__(self, host: str, port: int, world_size: int | None = None, is_master: bool = False,
                 timeout: float = 300.0) -> None:
        self.timeout = timeout
        self._server = None
        if is_master:
            self._server = _Server((host, port), _Handler)
            self._server.state = _State()  # type: ignore[attr-defined]
            port = self._server.server_address[1]
            threading.Thread(target=self._server.serve_forever, daemon=True, name="uccl-store").start()
        self.host, self.port = host, port
        self._lock = threading.Lock()
        self._sock: "socket.socket | None" = self._connect(host, port, timeout)

    @staticmethod
    def _connect(host: str, port: int, timeout: float) -> socket.socket:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            try:
                sock = socket.create_connection((host, port), timeout=max(1.0, timeout))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return sock
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise UcclTimeoutError(f"store: could not reach {host}:{port} within {timeout:.1f} s: {exc}")
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _call(self, op: int, key: str, arg: bytes) -> bytes:
        where = f"store at {self.host}:{self.port}"
        limit = self.timeout + (_REPLY_SLACK_S if op == _GET else 0.0)
        with self._lock:
            if self._sock is None:  # dropped after a call that timed out
                self._sock = self._connect(self.host, self.port, self.timeout)
            deadline = _Deadline(self._sock, limit)
            try:
                _send_frame(self._sock, bytes([op]), key.encode(), arg, deadline=deadline)
                status, value = _recv_fields(self._sock, 2, deadline)
            except socket.timeout as exc:
                self._drop()
                raise UcclTimeoutError(f"{where}: no answer to {_OPS[op]} of key {key!r} within {limit:.1f} s") \
                    from exc
            except (ConnectionError, OSError) as exc:
                self._drop()
                raise PeerFailureError(f"{where} is gone ({_OPS[op]} of key {key!r}): {exc}") from exc
        if status[0] == _TIMEOUT:
            raise UcclTimeoutError(f"store at {self.host}:{self.port}: key {key!r} did not appear within "
                                   f"{self.timeout:.1f} s")
        return value

    def set(self, key: str, value) -> None:
        self._call(_SET, key, value.encode() if isinstance(value, str) else bytes(value))

    def get(self, key: str) -> bytes:
        return self._call(_GET, key, struct.pack("!d", self.timeout))

    def add(self, key: str, amount: int) -> int:
        return int(self._call(_ADD, key, struct.pack("!q", amount)))

    def delete_key(self, key: str) -> bool:
        return self._call(_DELETE, key, b"") == b"1"

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        self._drop()  # not under the lock: a call blocked in another thread ends with it
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
