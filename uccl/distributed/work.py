"""Work handles that torch.distributed hands to users (and to DDP's reducer, from C++).

A UcclWork wraps zero or more uccl handles (collective Works, point-to-point Requests)
plus a `finish` step run exactly once after they complete (copying staged outputs back,
or enqueueing the host-to-device copies of a CUDA operation). `wait()` raises the
operation's error, as gloo's does; `get_future()` returns a torch Future that completes
on its own (a per-group completion thread waits for it), which DDP relies on.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Optional, Sequence

from uccl.distributed._compat import Work, make_future, timedelta_seconds
from uccl.errors import UcclTimeoutError


class UcclWork(Work):
    def __init__(self, what: str, result: Any, handles: Sequence[Any] = (), finish: Optional[Callable] = None,
                 timeout: float = 300.0, completer: Optional["Completer"] = None,
                 issued: Optional[threading.Event] = None, devices: Optional[list] = None,
                 after_wait: Optional[Callable] = None, settle_context: Optional[Callable] = None) -> None:
        super().__init__()
        self._what, self._result, self._handles = what, result, list(handles)
        self._finish, self._timeout, self._completer = finish, timeout, completer
        self._issued = issued  # None: issued already; else set once the handles exist
        self._devices, self._after_wait = devices, after_wait
        self._settle_context = settle_context  # CUDA: the stream the copies back run on
        self._lock = threading.RLock()  # future callbacks may wait on this work again
        self._done = not self._handles and finish is None and issued is None
        self._exc: Optional[BaseException] = None
        self._future = None
        self._source = -1

    # -- filled in by the issuing side -------------------------------------------------------
    def _attach(self, handles: Sequence[Any]) -> None:
        self._handles = list(handles)

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            self._fail_locked(exc)

    def _fail_locked(self, exc: BaseException) -> None:
        if not self._done:
            self._exc, self._done = exc, True
            self._handles, self._finish = [], None
            self._settle_future()

    @classmethod
    def completed(cls, what: str, result: Any, source: int = -1) -> "UcclWork":
        w = cls(what, result)
        w._source = source
        return w

    # -- completion ------------------------------------------------------------------------
    def _complete(self, timeout: float) -> None:
        """Blocks until done (or raises UcclTimeoutError leaving the work pending)."""
        with self._lock:
            if self._done:
                return
            if self._issued is not None and not self._issued.wait(timeout):
                raise UcclTimeoutError(f"{self._what} was not issued within {timeout:.3f} s")
            try:
                for h in self._handles:
                    out = h.wait(timeout)
                    peer = getattr(out, "peer", None)
                    if peer is not None:
                        self._source = int(peer)
                if self._finish is not None:
                    self._finish()
            except UcclTimeoutError as exc:
                if self._issued is None or self._issued.is_set():
                    # The operation itself is late: it fails for good (gloo aborts the pair).
                    self._fail_locked(_as_runtime(exc, self._what))
                raise
            except BaseException as exc:
                self._fail_locked(_as_runtime(exc, self._what))
                return
            self._done, self._handles, self._finish = True, [], None
            self._settle_future()

    def _settle_future(self) -> None:
        fut = self._future
        if fut is None or fut.done():
            return
        if self._exc is not None:
            fut.set_exception(self._exc)
        elif self._settle_context is not None:
            with self._settle_context():  # the future's events then follow the copies back
                fut.set_result(self._result if self._result is not None else [])
        else:
            fut.set_result(self._result if self._result is not None else [])

    # -- torch's Work interface --------------------------------------------------------------
    def wait(self, timeout=None) -> bool:
        limit = timedelta_seconds(timeout, self._timeout)
        try:
            self._complete(limit)
        except UcclTimeoutError as exc:
            raise _as_runtime(exc, self._what) from exc
        if self._exc is not None:
            raise self._exc
        if self._after_wait is not None:
            self._after_wait()
        return True

    def is_completed(self) -> bool:
        if self._done:
            return True
        if self._issued is not None and not self._issued.is_set():
            return False
        try:
            if not all(_test(h) for h in self._handles):
                return False
        except Exception as exc:  # an operation that failed is completed (with its error)
            self._fail(_as_runtime(exc, self._what))
            return True
        if not self._lock.acquire(blocking=False):
            return False
        self._lock.release()
        try:
            self._complete(self._timeout)
        except Exception:
            pass
        return self._done

    def is_success(self) -> bool:
        return self._done and self._exc is None

    def exception(self):
        return self._exc

    def result(self) -> Any:
        self.wait()
        return self._result if self._result is not None else []

    def source_rank(self) -> int:
        return self._source

    _source_rank = source_rank

    def synchronize(self) -> None:
        self.wait()

    def get_future(self):
        with self._lock:
            if self._future is None:
                self._future = make_future(self._devices)
                if self._done:
                    self._settle_future()
                elif self._completer is not None:
                    self._completer.submit(self)
                else:  # nobody else would ever complete it
                    threading.Thread(target=self._drain, name="uccl-work", daemon=True).start()
            return self._future

    def _drain(self) -> None:
        try:
            self._complete(self._timeout)
        except BaseException as exc:
            self._fail(_as_runtime(exc, self._what))

    def __repr__(self) -> str:
        state = "failed" if self._exc is not None else ("done" if self._done else "pending")
        return f"UcclWork({self._what}, {state})"


def _test(handle) -> bool:
    test = getattr(handle, "is_completed", None) or getattr(handle, "test")
    return bool(test())


def _as_runtime(exc: BaseException, what: str) -> BaseException:
    """uccl errors are RuntimeErrors already (as gloo's are); anything else is wrapped."""
    if isinstance(exc, RuntimeError):
        return exc
    err = RuntimeError(f"{what}: {type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err


class Completer:
    """One thread per process group completing works in issue order (uccl runs a group's
    operations in that order), so futures complete without anyone calling wait()."""

    def __init__(self, name: str) -> None:
        self._q: "queue.SimpleQueue[Optional[UcclWork]]" = queue.SimpleQueue()
        self._name = name
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def submit(self, work: UcclWork) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                    self._thread.start()
        self._q.put(work)

    def _loop(self) -> None:
        while True:
            work = self._q.get()
            if work is None:
                return
            try:
                work._complete(work._timeout)
            except BaseException as exc:
                work._fail(_as_runtime(exc, work._what))

    def close(self, join_s: float = 5.0) -> None:
        """Stops the thread once the works before are done. Waits for it (bounded): a daemon
        thread still inside torch's C++ (a future's callbacks) when the interpreter exits
        is unwound there, and a noexcept frame on the way aborts the process."""
        if self._thread is not None:
            self._q.put(None)
            if self._thread is not threading.current_thread():
                self._thread.join(join_s)
