"""Endpoints over the native engine (``hierbench._C.transfer``, loaded through ``hierbench._ext``).

Every blocking call releases the GIL; errors from the engine's threads are raised by the next
call as :class:`~hierbench.errors.TransferError` (a timeout: ``TransferTimeout``; a closed
channel: ``TransferClosed``).
"""

from __future__ import annotations

import atexit
import contextlib
import math
import sys
import threading
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hierbench import _ext
from hierbench.errors import TransferClosed
from hierbench.transfer.link import Link

__all__ = [
    "Endpoint",
    "Listener",
    "Message",
    "Record",
    "SendSlot",
    "Stats",
    "VirtualClock",
    "connect",
    "inprocess_pair",
    "listen",
]

DEFAULT_HOST = "127.0.0.1"


def _native():
    return _ext.load().transfer


def _ns_to_s(ns: int | None) -> float | None:
    return None if ns is None else ns * 1e-9


def _spec(link: Link, direction: str):
    rate = link.rate_bps(direction)
    return _native().LinkSpec(
        rate_bps=0 if math.isinf(rate) else max(1, round(rate)),
        burst_bytes=link.burst_bytes,
        latency_s=link.latency_s,
        jitter_s=link.jitter_s,
        seed=link.seed,
        outages=list(link.outages),
    )


def _options(
    slots: int = 2,
    recv_slots: int = 4,
    slot_bytes: int = 0,
    max_frame_bytes: int = 1 << 30,
    io_timeout: float = 30.0,
    linger: float = 2.0,
    handshake_timeout: float = 10.0,
    pacing_chunk_bytes: int = 0,
    sndbuf: int = 0,
    rcvbuf: int = 0,
):
    return _native().EndpointOptions(
        slots=slots,
        recv_slots=recv_slots,
        slot_bytes=slot_bytes,
        max_frame_bytes=max_frame_bytes,
        io_timeout_s=io_timeout,
        linger_s=linger,
        handshake_timeout_s=handshake_timeout,
        pacing_chunk_bytes=pacing_chunk_bytes,
        sndbuf=sndbuf,
        rcvbuf=rcvbuf,
    )


def _secret(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ValueError("the shared secret must not be empty")
    return key


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
        self._native = _native().VirtualClock(start, participants)

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


@dataclass(frozen=True, slots=True)
class Record:
    """One message's timeline on one endpoint; times are engine-clock nanoseconds (None: unknown).

    ``direction`` is "sent" (by this endpoint) or "received". For received messages the
    ``enqueued``/``tx_*`` stamps are the sender's clock (the same clock for in-process pairs and
    on one machine). ``delivered`` is when the message became due at the consumer (for sent
    messages: the sender's estimate, transmission end + emulated delay).
    """

    direction: str
    seq: int
    nbytes: int
    enqueued_ns: int | None
    tx_start_ns: int | None
    tx_end_ns: int | None
    arrived_ns: int | None
    delivered_ns: int | None
    taken_ns: int | None

    enqueued = property(lambda self: _ns_to_s(self.enqueued_ns))
    tx_start = property(lambda self: _ns_to_s(self.tx_start_ns))
    tx_end = property(lambda self: _ns_to_s(self.tx_end_ns))
    arrived = property(lambda self: _ns_to_s(self.arrived_ns))
    delivered = property(lambda self: _ns_to_s(self.delivered_ns))
    taken = property(lambda self: _ns_to_s(self.taken_ns))

    @classmethod
    def _from(cls, t: tuple) -> Record:
        return cls(*t)


@dataclass(frozen=True, slots=True)
class Stats:
    """Counters of one endpoint. Durations in seconds."""

    messages_sent: int
    bytes_sent: int
    messages_received: int
    bytes_received: int
    dropped: int  # committed but never sent: closed early, or the peer closed
    link_busy_s: float  # time this endpoint's link spent transmitting
    producer_stall_s: float  # time send()/acquire() blocked for a free slot (backpressure)
    consumer_wait_s: float  # time recv() blocked for a message
    send_span_s: float  # first transmission start -> last transmission end
    recv_span_s: float  # first byte received -> last message complete

    @property
    def goodput_bps(self) -> float:
        """Payload bits sent per second over the send span."""
        return self.bytes_sent * 8 / self.send_span_s if self.send_span_s > 0 else math.nan

    @property
    def recv_goodput_bps(self) -> float:
        return self.bytes_received * 8 / self.recv_span_s if self.recv_span_s > 0 else math.nan

    @property
    def link_busy_fraction(self) -> float:
        """Share of the send span the link was transmitting (1.0: never idle)."""
        return self.link_busy_s / self.send_span_s if self.send_span_s > 0 else math.nan

    @classmethod
    def _from(cls, d: dict[str, Any]) -> Stats:
        def span(a, b):
            return (b - a) * 1e-9 if a is not None and b is not None else 0.0

        return cls(
            messages_sent=d["messages_sent"],
            bytes_sent=d["bytes_sent"],
            messages_received=d["messages_received"],
            bytes_received=d["bytes_received"],
            dropped=d["dropped"],
            link_busy_s=d["link_busy_ns"] * 1e-9,
            producer_stall_s=d["producer_stall_ns"] * 1e-9,
            consumer_wait_s=d["consumer_wait_ns"] * 1e-9,
            send_span_s=span(d["first_tx_start_ns"], d["last_tx_end_ns"]),
            recv_span_s=span(d["first_rx_start_ns"], d["last_arrived_ns"]),
        )


class Message:
    """A received message: ``seq``, ``data`` and its timeline (``record``).

    With ``recv(copy=True)`` (default) ``data`` is ``bytes`` and the engine's slot is already free.
    With ``copy=False`` it is a writable ``memoryview`` of the receive slot itself, valid until
    :meth:`release` (or the end of a ``with`` block); the slot stays busy until then.
    """

    __slots__ = ("_lease", "data", "record")

    def __init__(self, data, record: Record, lease=None):
        self.data = data
        self.record = record
        self._lease = lease

    @property
    def seq(self) -> int:
        return self.record.seq

    @property
    def nbytes(self) -> int:
        return self.record.nbytes

    def tensor(self, dtype=None, shape=None):
        """The payload as a CPU tensor (``dtype`` default uint8, optional ``shape``).

        Shares memory with a ``copy=False`` message; copies a ``bytes`` payload (immutable).
        """
        import torch

        dtype = torch.uint8 if dtype is None else dtype
        buf = self.data if isinstance(self.data, memoryview) else bytearray(self.data)
        t = torch.frombuffer(buf, dtype=dtype) if len(buf) else torch.empty(0, dtype=dtype)
        return t.view(shape) if shape is not None else t

    def release(self) -> None:
        if self._lease is not None:
            if isinstance(self.data, memoryview):
                self.data.release()
            self._lease.release()
            self._lease = None

    def __enter__(self) -> Message:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Message(seq={self.seq}, nbytes={self.nbytes})"


class SendSlot:
    """A send slot lent to the producer: write the message into it, then :meth:`commit`.

    ``buffer`` is a writable memoryview of ``nbytes`` bytes and :meth:`tensor` a tensor view of
    the same memory, so a producer can compute straight into the slot (no copy). Do not touch
    either after commit: the engine is sending them. Leaving a ``with`` block without commit (or
    with an exception) gives the slot back.
    """

    __slots__ = ("_native", "buffer")

    def __init__(self, native):
        self._native = native
        self.buffer = memoryview(native)

    @property
    def nbytes(self) -> int:
        return self._native.nbytes

    def tensor(self, dtype=None, shape=None):
        import torch

        dtype = torch.uint8 if dtype is None else dtype
        if not self.nbytes:
            return torch.empty(0, dtype=dtype)
        t = torch.frombuffer(self._native, dtype=dtype)
        return t.view(shape) if shape is not None else t

    def commit(self, nbytes: int | None = None) -> int:
        """Queues the first ``nbytes`` (default all) for sending; returns the sequence number."""
        return self._native.commit(nbytes)

    def abort(self) -> None:
        self._native.abort()

    @property
    def committed(self) -> bool:
        return self._native.done

    def __enter__(self) -> SendSlot:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if not self._native.done:
            self._native.abort()


_LIVE: weakref.WeakSet = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _close_all() -> None:
    """Closes endpoints left open at exit (flushing for at most a second each)."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for ep in live:
        with contextlib.suppress(Exception):
            ep.close(timeout=1.0)


class Endpoint:
    """One end of a bidirectional, paced, in-order message channel.

    Sends go through a ring of ``slots`` send slots (default 2: double buffering): ``send``
    returns as soon as the message is queued and blocks only while all slots are in flight
    (backpressure). ``recv`` returns complete messages in order, once their emulated delivery
    time has come. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, native, link: Link, direction: str):
        self._native = native
        self.link = link
        self.direction = direction
        with _LIVE_LOCK:
            _LIVE.add(self)

    # -- producer -------------------------------------------------------------------------------

    def send(self, data, *, timeout: float | None = None) -> int:
        """Queues one message; returns its sequence number.

        ``data``: bytes-like (copied into a slot), or a CPU tensor of any dtype (not copied: the
        engine keeps a reference and sends its memory; do not modify it in place until sent, see
        :meth:`flush`). A non-contiguous tensor is made contiguous first.
        Raises ``TransferTimeout`` if no slot frees up within ``timeout`` seconds.
        """
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(data, torch.Tensor):
            return self._native.send_tensor(data, timeout)
        return self._native.send(data, timeout)

    def acquire(self, nbytes: int, *, timeout: float | None = None) -> SendSlot:
        """A free send slot of ``nbytes`` to fill in place (blocks while all are in flight)."""
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        return SendSlot(self._native.acquire(nbytes, timeout))

    def flush(self, *, timeout: float | None = None) -> None:
        """Waits until every queued message has left the link."""
        self._native.flush(timeout)

    # -- consumer -------------------------------------------------------------------------------

    def recv(self, *, timeout: float | None = None, copy: bool = True) -> Message:
        """The next message, in order. ``TransferClosed`` once the peer closed and all its
        messages were taken; ``TransferTimeout`` after ``timeout`` seconds."""
        lease = self._native.recv(timeout)
        record = Record._from(lease.record)
        if copy:
            data = lease.tobytes()
            lease.release()
            return Message(data, record)
        return Message(memoryview(lease), record, lease)

    def __iter__(self) -> Iterator[Message]:
        """Messages until the peer closes the channel."""
        while True:
            try:
                yield self.recv()
            except TransferClosed:
                return

    # -- lifecycle and measurements -------------------------------------------------------------

    def close(self, *, timeout: float | None = None) -> None:
        """Sends what is queued (up to ``timeout`` seconds; None: all), tells the peer, stops.

        Messages not sent by then are dropped (``stats().dropped``). Idempotent; never raises
        for engine errors (they were raised by earlier calls).
        """
        self._native.close(timeout)
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def records(self, *, clear: bool = False) -> list[Record]:
        """Per-message timelines (sent ones first, each in sequence order)."""
        return [Record._from(t) for t in self._native.records(clear)]

    def stats(self) -> Stats:
        return Stats._from(self._native.stats())

    def now(self) -> float:
        """The engine clock, seconds (a VirtualClock's time for virtual endpoints)."""
        return self._native.now_ns() * 1e-9

    def now_ns(self) -> int:
        return self._native.now_ns()

    @property
    def epoch(self) -> float:
        """Engine-clock time this endpoint was created (outages are relative to it), seconds."""
        return self._native.epoch_ns * 1e-9

    @property
    def peer_max_frame(self) -> int:
        return self._native.peer_max_frame

    def __repr__(self) -> str:
        return f"Endpoint({self._native.describe}, {self.direction}: {self.link})"


def inprocess_pair(
    link: Link | str | None = None,
    *,
    slots: int = 2,
    recv_slots: int = 4,
    slot_bytes: int = 0,
    max_frame_bytes: int = 1 << 30,
    clock: VirtualClock | None = None,
) -> tuple[Endpoint, Endpoint]:
    """Two endpoints joined in this process: ``a`` (edge) sends ``up``, ``b`` (cloud) ``down``.

    ``clock``: a :class:`VirtualClock` runs the pair in virtual time; default real time.
    """
    link = Link() if link is None else Link.parse(link)
    opts = _options(slots, recv_slots, slot_bytes, max_frame_bytes)
    a, b = _native().inprocess_pair(
        _spec(link, "up"), _spec(link, "down"), opts, None if clock is None else clock._native
    )
    return Endpoint(a, link, "up"), Endpoint(b, link, "down")


class Listener:
    """A TCP listener; :meth:`accept` returns authenticated endpoints."""

    def __init__(self, native, link: Link, direction: str):
        self._native = native
        self.link = link
        self.direction = direction

    @property
    def host(self) -> str:
        return self._native.host

    @property
    def port(self) -> int:
        return self._native.port

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def accept(self, *, timeout: float | None = None, link: Link | str | None = None) -> Endpoint:
        """Waits for a peer and authenticates it. A peer that fails the handshake raises
        ``TransferError`` naming it and the cause; the listener stays usable.

        ``link``: shape this connection's sends with another link than the listener's (for
        example an unshaped control connection beside a shaped data connection)."""
        link = self.link if link is None else Link.parse(link)
        native = self._native.accept(_spec(link, self.direction), timeout)
        return Endpoint(native, link, self.direction)

    def close(self) -> None:
        self._native.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Listener({self.host}:{self.port})"


def listen(
    host: str = DEFAULT_HOST,
    port: int = 0,
    secret: str | bytes = b"",
    *,
    link: Link | str | None = None,
    direction: str = "down",
    backlog: int = 16,
    **options,
) -> Listener:
    """Listens on ``host:port`` (default loopback; port 0 picks a free one).

    Accepted endpoints send with ``link``'s ``direction`` rate (default ``down``: the listener is
    the cloud). ``options``: ``slots``, ``recv_slots``, ``slot_bytes``, ``max_frame_bytes``,
    ``io_timeout``, ``linger``, ``handshake_timeout``, ``pacing_chunk_bytes``, ``sndbuf``,
    ``rcvbuf`` (socket buffer sizes; small ones keep kernel buffers from hiding the pacing).
    """
    link = Link() if link is None else Link.parse(link)
    link.rate_bps(direction)  # validates direction
    if host not in ("127.0.0.1", "::1", "localhost"):
        warnings.warn(
            f"transfer listener bound to {host!r}, not loopback: reachable from the network "
            "(the handshake still requires the shared secret)",
            stacklevel=2,
        )
    native = _native().Listener(host, port, _secret(secret), _options(**options), backlog)
    return Listener(native, link, direction)


def connect(
    host: str,
    port: int,
    secret: str | bytes,
    *,
    link: Link | str | None = None,
    direction: str = "up",
    timeout: float | None = 10.0,
    **options,
) -> Endpoint:
    """Connects to a :func:`listen` endpoint and authenticates both ways; sends ``up`` by
    default (the connecting side is the edge). ``options`` as for :func:`listen`."""
    link = Link() if link is None else Link.parse(link)
    link.rate_bps(direction)
    native = _native().connect(
        host, port, _secret(secret), _spec(link, direction), _options(**options), timeout
    )
    return Endpoint(native, link, direction)
