"""Virtual time for the engine: tests run the link emulator exactly and fast."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from hierbench import _ext

__all__ = ["VirtualClock"]


class VirtualClock:
    """Virtual time for tests: fast and deterministic.

    Time stands still while any participant can run and jumps to the next scheduled event when
    all are blocked. Participants are the engine's threads plus ``participants`` external
    threads (default 1: the calling thread), which count as blocked only inside an engine call or
    :meth:`sleep` (use it to "spend" compute time). A thread that stops driving the engine calls
    :meth:`leave`; one that starts, :meth:`join`. If everyone waits and nothing is scheduled,
    the waiting external call raises ``TransferError`` (deadlock) instead of hanging.
    """

    def __init__(self, start: float = 0.0, participants: int = 1):
        self._native = _ext.load().transfer.VirtualClock(start, participants)

    def now(self) -> float:
        return self._native.now_ns() * 1e-9

    def now_ns(self) -> int:
        return self._native.now_ns()

    def sleep(self, seconds: float) -> None:
        self._native.sleep(seconds)

    def join(self) -> None:
        self._native.join()

    def leave(self) -> None:
        self._native.leave()

    @contextlib.contextmanager
    def participant(self) -> Iterator[None]:
        """Counts the calling thread as a participant for the block (for extra threads)."""
        self.join()
        try:
            yield
        finally:
            self.leave()
