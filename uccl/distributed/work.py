"""Work handles that torch.distributed hands to users (and to DDP's reducer, from C++).

A UcclWork wraps zero or more uccl handles (collective Works, point-to-point Requests)
plus a `finish` step run exactly once after they complete (copying staged outputs back,
or enqueueing the host-to-device copies of a CUDA operation). `wait()` raises the
operation's error, as gloo's does; `get_future()` returns a torch Future that completes
on its own (a per-group completion thread waits for it), which DDP relies on.

Callbacks chained on such a future (`then`, `add_done_callback`) run on callback threads,
never on the completion thread: a callback may issue another collective and wait for it
(DDP's PowerSGD hook does), and the completion thread stays free to complete it. Futures
are still marked done in issue order; as with gloo's worker threads, the callbacks of two
futures may run at the same time when the earlier one is still running (blocked) when
the later future completes.
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
        self._future_marked: Optional[threading.Event] = None  # set once the future is done
        self._settle_claimed = False
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

    @classmethod
    def completed(cls, what: str, result: Any, source: int = -1) -> "UcclWork":
        w = cls(what, result)
        w._source = source
        return w

    # -- completion ------------------------------------------------------------------------
    def _complete(self, timeout: float) -> None:
        """Blocks until done (or raises UcclTimeoutError leaving the work pending). Never
        completes the future: that runs user callbacks, so whoever owns the future (the
        group's Completer, or _drain) does it, through _settle_future."""
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

    def _claim_future(self):
        """The future to complete, once: None if there is none yet, or it is claimed already."""
        with self._lock:
            if self._future is None or self._settle_claimed or not self._done:
                return None
            self._settle_claimed = True
            return self._future

    def _settle_future(self) -> None:
        """Completes the future (running the callbacks chained on it, on this thread)."""
        fut = self._claim_future()
        if fut is None:
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
            if self._future is not None:
                return self._future
            fut = make_future(self._devices)
            # First callback of all (before any the user chains): tells the Completer the
            # future is marked done, so the next one may be completed, in issue order.
            marked = threading.Event()
            fut.add_done_callback(lambda _f: marked.set())
            self._future, self._future_marked = fut, marked
            done = self._done
            if not done and self._completer is not None:
                self._completer.submit(self)
            elif not done:  # nobody else would ever complete it
                threading.Thread(target=self._drain, name="uccl-work", daemon=True).start()
        if done:  # nothing chained on it yet: no user code runs here
            self._settle_future()
        return fut

    def _drain(self) -> None:
        try:
            self._complete(self._timeout)
        except BaseException as exc:
            self._fail(_as_runtime(exc, self._what))
        self._settle_future()

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


class _CallbackThreads:
    """Threads that complete futures, and so run the callbacks chained on them, for one
    Completer. A callback may block (wait on another collective): the next future is then
    completed on another thread, started if none is idle. Idle threads exit after a while."""

    IDLE_EXIT_S = 10.0

    def __init__(self, name: str) -> None:
        self._name = name
        self._q: "queue.SimpleQueue[Optional[UcclWork]]" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for a future to complete, or about to
        self._threads: list[threading.Thread] = []

    def settle(self, work: UcclWork, timeout: float) -> None:
        """Completes work's future on a callback thread; returns once it is marked done
        (before the callbacks chained on it run), or after `timeout` at the latest."""
        marked = work._future_marked
        if marked is None or marked.is_set():
            return
        with self._lock:
            if self._idle == 0:
                self._idle += 1
                self._threads = [t for t in self._threads if t.is_alive()]
                t = threading.Thread(target=self._loop, name=f"{self._name}-cb{len(self._threads)}", daemon=True)
                self._threads.append(t)
                t.start()
            self._q.put(work)
        marked.wait(timeout)

    def _loop(self) -> None:
        while True:
            try:
                work = self._q.get(timeout=self.IDLE_EXIT_S)
            except queue.Empty:
                with self._lock:  # a settle() that counted on this thread has put its work by now
                    if self._q.empty():
                        self._idle -= 1
                        return
                continue
            with self._lock:
                self._idle -= 1
            if work is None:
                return
            try:
                work._settle_future()
            except BaseException:  # torch reports a callback's error through the chained future
                pass
            finally:
                if work._future_marked is not None:
                    work._future_marked.set()
            with self._lock:
                self._idle += 1

    def close(self, join_s: float) -> None:
        """Stops the idle threads (one waiting at interpreter exit is fine; one inside a
        callback finishes it first, bounded by join_s)."""
        with self._lock:
            threads = list(self._threads)
        for _ in threads:
            self._q.put(None)
        for t in threads:
            if t is not threading.current_thread():
                t.join(join_s)


class Completer:
    """One thread per process group completing works in issue order (uccl runs a group's
    operations in that order), so futures complete without anyone calling wait(). The
    thread never runs user code: it hands each future to a callback thread and goes on
    once the future is marked done, so futures complete in issue order and a callback
    that waits for another operation of the group does not wait on itself."""

    def __init__(self, name: str) -> None:
        self._q: "queue.SimpleQueue[Optional[UcclWork]]" = queue.SimpleQueue()
        self._name = name
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._callbacks = _CallbackThreads(name)

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
            self._callbacks.settle(work, work._timeout)

    def close(self, join_s: float = 5.0) -> None:
        """Stops the thread once the works before are done. Waits for it (bounded): a daemon
        thread still inside torch's C++ (a future's callbacks) when the interpreter exits
        is unwound there, and a noexcept frame on the way aborts the process."""
        if self._thread is not None:
            self._q.put(None)
            if self._thread is not threading.current_thread():
                self._thread.join(join_s)
        self._callbacks.close(join_s)
