"""EventOverlap: what an asynchronous MoE operation returns.

On CPU tensors the event is the completion of the operation: the transfers were posted
when the call returned and progress in uccl's engine threads; waiting on the event
finishes the receiving side (waits for the landed chunks and unpacks them into the
tensors the call already returned). An event that is never waited on is finished by
the next operation on the same Buffer, so operations stay in order.
"""

from __future__ import annotations

from typing import Callable, Optional


class EventOverlap:
    def __init__(self, finish: Optional[Callable[[], None]] = None) -> None:
        self._finish = finish

    @property
    def done(self) -> bool:
        return self._finish is None

    def current_stream_wait(self) -> None:
        """Blocks until the operation is complete (CPU: the caller's thread is the stream)."""
        finish, self._finish = self._finish, None
        if finish is not None:
            finish()

    wait = current_stream_wait

    def __enter__(self) -> "EventOverlap":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.current_stream_wait()
