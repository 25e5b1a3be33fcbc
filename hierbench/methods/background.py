"""The roles' background threads: :class:`Sender` (a byte-bounded send backlog) and
:class:`Receiver` (receive and parse ahead), over any :class:`Channel`.

A failed transfer either surfaces at the next ``put``/``flush``/``get`` as a
:class:`~hierbench.errors.TransferError`, or, given a ``recover`` function, reconnects and goes
on (the edge's resume after a cloud restart: :mod:`hierbench.methods.checkpoint`).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Protocol

from hierbench.errors import TransferError, TransferTimeout
from hierbench.methods import messages
from hierbench.methods.messages import RoleMessage

now = time.perf_counter  # CLOCK_MONOTONIC on Linux: comparable across processes on one machine
#: CPU time this process got (all its threads): with ``now``, the CPU share of a compute span.
cpu_now = time.process_time


class Channel(Protocol):
    """What a role needs from a transport: ordered, reliable messages."""

    def send(self, data: bytes, timeout: float | None = None) -> None: ...

    def recv(self, timeout: float | None = None) -> bytes: ...

    def close(self, timeout: float | None = None) -> None: ...


def _attempt(recover: Callable[..., object], *args) -> BaseException | None:
    """Run ``recover(*args)`` after a failed transfer: ``None`` if it succeeded, else its error
    (the one to report)."""
    try:
        recover(*args)
    except BaseException as again:
        return again
    return None


def _fail(worker, exc: BaseException) -> None:
    """Record a background thread's failure and wake whoever waits on it (``put``, ``get``)."""
    with worker._cv:
        worker._error = exc
        worker._cv.notify_all()


class Sender:
    """Sends messages from a background thread, holding up to ``max_bytes`` not yet handed over.

    The hierarchical edge puts its uploads here and goes on training; ``put`` waits only when the
    backlog is full (the link is far slower than the edge, or down). Errors of the sending thread
    are raised by the next ``put`` or by ``flush``, unless ``recover`` is given: then a failed send
    calls ``recover(generation)``, which reconnects and :meth:`reset` s the queue, and sending
    goes on (the edge's resume after a cloud restart).
    """

    def __init__(
        self,
        channel: Channel,
        max_bytes: int,
        name: str = "uplink",
        recover: Callable[[int], None] | None = None,
    ) -> None:
        self._channel = channel
        self._max = max_bytes
        self._queue: collections.deque[tuple[int, bytes]] = collections.deque()
        self._bytes = 0
        self._cv = threading.Condition()
        self._error: BaseException | None = None
        self._closing = False
        self._recover = recover
        self.generation = 0
        self.stall_s = 0.0
        self._last_step = -1  # the highest step queued (puts of steps <= it are duplicates)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, data: bytes, step: int = -1) -> None:
        """Queue ``data``; a message with a step (>= 0) that a :meth:`reset` already queued is
        dropped (the reset replayed it), so each step goes out once per connection."""
        t0 = now()
        try:
            with self._cv:
                while self._bytes and self._bytes + len(data) > self._max and self._error is None:
                    self._cv.wait()
                self._raise()
                if 0 <= step <= self._last_step:
                    return
                self._last_step = max(self._last_step, step)
                self._queue.append((step, data))
                self._bytes += len(data)
                self._cv.notify_all()
        finally:  # a wait counts however it ended (also when a reset had queued this step)
            self.stall_s += now() - t0

    def reset(self, channel: Channel, entries, generation: int) -> None:
        """Send ``entries`` ((step, bytes), in order) on ``channel`` instead of what is queued."""
        with self._cv:
            self._channel = channel
            self._queue = collections.deque(entries)
            self._bytes = sum(len(d) for _, d in self._queue)
            self._last_step = max([self._last_step, *(st for st, _ in self._queue)])
            self.generation = generation
            self._cv.notify_all()

    def flush(self) -> None:
        """Wait until everything queued has been handed to the channel."""
        with self._cv:
            while self._queue and self._error is None:
                self._cv.wait()
            self._raise()

    def close(self) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise TransferError(f"sending failed: {self._error}") from self._error

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closing:
                    self._cv.wait()
                if not self._queue:
                    return
                _, data = self._queue[0]
                channel, generation = self._channel, self.generation
            try:
                channel.send(data)
            except BaseException as exc:  # surfaced by put()/flush(), unless we can recover
                error = exc
                if self._recover is not None and not self._closing:
                    error = _attempt(self._recover, generation)
                    if error is None:
                        continue
                _fail(self, error)
                return
            with self._cv:
                if self.generation == generation and self._queue:
                    self._queue.popleft()
                    self._bytes -= len(data)
                self._cv.notify_all()


_POLL_S = 0.2  # how often a Receiver thread looks at its stop flag


class Receiver:
    """Receives and parses messages on a background thread, so the sender never blocks on us.

    ``hook(message)`` sees every message first and returns True to consume it (acknowledgements);
    ``recover(generation)`` (optional) reconnects after a failed receive and returns the new
    channel and its generation.
    """

    def __init__(
        self,
        channel: Channel,
        name: str,
        hook: Callable[[RoleMessage], bool] | None = None,
        recover: Callable[[int], tuple[Channel, int]] | None = None,
    ) -> None:
        self._channel = channel
        self._queue: collections.deque[RoleMessage] = collections.deque()
        self._cv = threading.Condition()
        self._error: BaseException | None = None
        self._stop = False
        self._hook = hook
        self._recover = recover
        self.generation = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def get(self, timeout: float | None = None) -> RoleMessage:
        with self._cv:
            if not self._cv.wait_for(lambda: self._queue or self._error, timeout):
                raise TransferTimeout(f"no message within {timeout} s")
            if self._queue:
                return self._queue.popleft()
            raise TransferError(f"receiving failed: {self._error}") from self._error

    def close(self, timeout: float = 5.0) -> None:
        """Stop receiving and wait for the thread (it polls, so this takes at most ~0.2 s).

        The thread must not outlive the role: a daemon thread still inside the native receive
        (GIL released) when the interpreter shuts down is killed as it takes the GIL back, and
        that aborts the process ("terminate called without an active exception")."""
        self._stop = True
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop:
            try:
                msg = messages.unpack(self._channel.recv(timeout=_POLL_S))
            except TransferTimeout:
                continue  # nothing yet: look at _stop again
            except BaseException as exc:
                error = exc
                if self._recover is not None and not self._stop:
                    error = _attempt(self._reconnect)
                    if error is None:
                        continue
                _fail(self, error)
                return
            if self._hook is not None and self._hook(msg):
                continue
            with self._cv:
                self._queue.append(msg)
                self._cv.notify_all()

    def _reconnect(self) -> None:
        self._channel, self.generation = self._recover(self.generation)
