"""Endpoints over the native engine (``hierbench._C.transfer``, loaded through ``hierbench._ext``).

Every blocking call releases the GIL; errors from the engine's threads are raised by the next
call as :class:`~hierbench.errors.TransferError` (a timeout: ``TransferTimeout``; a closed
channel: ``TransferClosed``).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Iterator

from hierbench import _ext
from hierbench.errors import TransferClosed, TransferTimeout
from hierbench.transfer.clock import VirtualClock
from hierbench.transfer.ingress import Ingress
from hierbench.transfer.link import Link
from hierbench.transfer.messages import Message, Record, SendSlot, Stats

__all__ = ["MIN_SECRET_BYTES", "Endpoint", "Listener", "connect", "inprocess_pair", "listen"]

DEFAULT_HOST = "127.0.0.1"
_ACCEPT_SLICE = 0.25  # seconds per native wait inside Listener.accept
_WAIT_SLICE = 0.25  # seconds per native wait of a long send/acquire/recv/flush (real clock)
_LOG = logging.getLogger("hierbench.transfer")
_LISTENERS = object()  # Listener.accept(ingress=...) default: the listener's ingress


def _log_rejection(message: str) -> None:
    _LOG.warning("%s", message)


def _native():
    return _ext.load().transfer


def _spec(link: Link, direction: str, ingress: Ingress | None = None):
    """The engine's spec of ``link``'s ``direction``; ``ingress``: the shared bucket its sends also
    draw from."""
    rate = link.rate_bps(direction)
    if ingress is not None and not isinstance(ingress, Ingress):
        raise TypeError(f"ingress must be a hierbench.transfer.Ingress or None, got {ingress!r}")
    return _native().LinkSpec(
        rate_bps=0 if math.isinf(rate) else max(1, round(rate)),
        burst_bytes=link.burst_bytes,
        latency_s=link.latency_s,
        jitter_s=link.jitter_s,
        seed=link.seed,
        outages=list(link.outages),
        ingress=None if ingress is None else ingress._native,
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


#: The shortest shared secret the TCP transport accepts (the handshake derives its key from it
#: with scrypt; docs/transfer.md, "Threat model").
MIN_SECRET_BYTES = 16


def _secret(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else bytes(secret)
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(
            f"the shared secret is {len(key)} bytes; at least {MIN_SECRET_BYTES} are required "
            "(make one with: python -c 'import secrets; print(secrets.token_hex(16))')"
        )
    return key


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

    def __init__(self, native, link: Link, direction: str, ingress: Ingress | None = None):
        self._native = native
        self.link = link
        self.direction = direction
        self.ingress = ingress  # the shared bucket this endpoint's sends also draw from
        self._virtual = bool(native.virtual)
        with _LIVE_LOCK:
            _LIVE.add(self)

    def _wait(self, call, timeout: float | None):
        """``call(timeout)``, a blocking native call: on the real clock a long wait is made of
        short ones, so that Ctrl-C (KeyboardInterrupt) and other signal handlers get in between
        (a native wait holds no GIL, but Python runs handlers only between bytecodes). On a
        virtual clock one wait: its time only passes when every participant waits."""
        if self._virtual or (timeout is not None and timeout <= _WAIT_SLICE):
            return call(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _WAIT_SLICE if deadline is None else deadline - time.monotonic()
            try:
                return call(max(0.0, min(left, _WAIT_SLICE)))
            except TransferTimeout as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TransferTimeout(
                        f"{exc} (the last slice of a {timeout:g} s wait)"
                    ) from None

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
            return self._wait(lambda t: self._native.send_tensor(data, t), timeout)
        return self._wait(lambda t: self._native.send(data, t), timeout)

    def acquire(self, nbytes: int, *, timeout: float | None = None) -> SendSlot:
        """A free send slot of ``nbytes`` to fill in place (blocks while all are in flight)."""
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        return SendSlot(self._wait(lambda t: self._native.acquire(nbytes, t), timeout))

    def flush(self, *, timeout: float | None = None) -> None:
        """Waits until every queued message has left the link."""
        self._wait(self._native.flush, timeout)

    # -- consumer -------------------------------------------------------------------------------

    def recv(self, *, timeout: float | None = None, copy: bool = True) -> Message:
        """The next message, in order. ``TransferClosed`` once the peer closed and all its
        messages were taken; ``TransferTimeout`` after ``timeout`` seconds."""
        lease = self._wait(self._native.recv, timeout)
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

        Messages not sent by then are dropped (``stats().dropped``: queued ones and a part-sent
        one, which TCP ends with a "cancelled" trailer) and CLOSE is still sent, so the peer
        sees :class:`~hierbench.errors.TransferClosed`. Idempotent; never raises for engine
        errors (they were raised by earlier calls).
        """
        self._native.close(timeout)
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def records(self, *, clear: bool = False) -> list[Record]:
        """Per-message timelines (sent ones first, each in sequence order).

        A sent message is recorded before its last bytes leave: any message the peer has
        received is already in the sender's records (they never lag the peer)."""
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

    def set_recv_limit(self, nbytes: int) -> None:
        """Refuse every later message over ``nbytes`` (below ``max_frame_bytes``, which the
        handshake fixed before anyone knew what the run sends): such a message fails the
        connection with a :class:`~hierbench.errors.TransferError` before its slot is sized."""
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            raise ValueError(f"nbytes must be an int >= 0, got {nbytes!r}")
        self._native.set_recv_limit(nbytes)

    def __repr__(self) -> str:
        via = "" if self.ingress is None else f", via {self.ingress!r}"
        return f"Endpoint({self._native.describe}, {self.direction}: {self.link}{via})"


def inprocess_pair(
    link: Link | str | None = None,
    *,
    slots: int = 2,
    recv_slots: int = 4,
    slot_bytes: int = 0,
    max_frame_bytes: int = 1 << 30,
    clock: VirtualClock | None = None,
    ingress: Ingress | None = None,
) -> tuple[Endpoint, Endpoint]:
    """Two endpoints joined in this process: ``a`` (edge) sends ``up``, ``b`` (cloud) ``down``.

    ``clock``: a :class:`VirtualClock` runs the pair in virtual time; default real time.
    ``ingress``: a shared :class:`Ingress` that ``a``'s sends (up) also draw from; an in-process
    one serves the endpoints of one clock.
    """
    link = Link() if link is None else Link.parse(link)
    opts = _options(slots, recv_slots, slot_bytes, max_frame_bytes)
    a, b = _native().inprocess_pair(
        _spec(link, "up", ingress),
        _spec(link, "down"),
        opts,
        None if clock is None else clock._native,
    )
    return Endpoint(a, link, "up", ingress), Endpoint(b, link, "down")


class Listener:
    """A TCP listener; :meth:`accept` returns authenticated endpoints.

    Handshakes run on the listener's own thread, all at once, each bounded in time and bytes: a
    connection that fails one (a stranger, garbage, the wrong secret, silence) is closed and
    reported to ``on_reject`` (default: the ``hierbench.transfer`` logger, as a warning); it never
    reaches :meth:`accept` and never stops the listener.
    """

    def __init__(
        self, native, link: Link, direction: str, on_reject=None, ingress: Ingress | None = None
    ):
        self._native = native
        self.link = link
        self.direction = direction
        self.ingress = ingress
        self.on_reject = on_reject if on_reject is not None else _log_rejection

    @property
    def rejected(self) -> int:
        """How many connections were dropped so far (failed handshakes, limits)."""
        return self._native.rejected

    def report_rejections(self) -> list[str]:
        """Reports (to ``on_reject``) and returns why connections were dropped since the last
        call."""
        out = list(self._native.take_rejections())
        for why in out:
            self.on_reject(why)
        return out

    @property
    def host(self) -> str:
        return self._native.host

    @property
    def port(self) -> int:
        return self._native.port

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def accept(
        self,
        *,
        timeout: float | None = None,
        link: Link | str | None = None,
        ingress: Ingress | object | None = _LISTENERS,
    ) -> Endpoint:
        """The next peer that passed the handshake (``TransferTimeout`` if none within
        ``timeout`` seconds; None: wait forever). Peers that fail it are reported to
        ``on_reject`` meanwhile, and waiting goes on.

        ``link``: shape this connection's sends with another link than the listener's (for
        example an unshaped control connection beside a shaped data connection). ``ingress``:
        the shared :class:`Ingress` its sends also draw from (default: the listener's; None:
        none)."""
        link = self.link if link is None else Link.parse(link)
        ingress = self.ingress if ingress is _LISTENERS else ingress
        spec = _spec(link, self.direction, ingress)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:  # in short waits, to report rejections (and let Ctrl-C in) as they come
            self.report_rejections()
            left = _ACCEPT_SLICE if deadline is None else deadline - time.monotonic()
            try:
                native = self._native.accept(spec, max(0.0, min(left, _ACCEPT_SLICE)))
            except TransferTimeout:
                if deadline is not None and time.monotonic() >= deadline:
                    self.report_rejections()
                    raise
                continue
            self.report_rejections()
            return Endpoint(native, link, self.direction, ingress)

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
    backlog: int = 128,
    max_pending: int = 64,
    frame_macs: bool = False,
    on_reject=None,
    ingress: Ingress | None = None,
    **options,
) -> Listener:
    """Listens on ``host:port`` (default loopback; port 0 picks a free one).

    Accepted endpoints send with ``link``'s ``direction`` rate (default ``down``: the listener is
    the cloud). ``secret``: at least :data:`MIN_SECRET_BYTES` bytes. ``max_pending``: handshakes
    in progress at once (a newer connection evicts the oldest handshake of the address that holds
    the most). ``frame_macs``: authenticate
    every frame even on loopback (off loopback they always are). ``on_reject(message)``: called
    for every connection dropped (default: a warning on the ``hierbench.transfer`` logger).
    ``ingress``: a shared :class:`Ingress` that the accepted endpoints' sends also draw from
    (a listener that is an edge; the cloud's sends, the downlink, are normally not shared).
    ``options``: ``slots``, ``recv_slots``, ``slot_bytes``, ``max_frame_bytes``, ``io_timeout``,
    ``linger``, ``handshake_timeout``, ``pacing_chunk_bytes``, ``sndbuf``, ``rcvbuf`` (socket
    buffer sizes; small ones keep kernel buffers from hiding the pacing).
    """
    link = Link() if link is None else Link.parse(link)
    link.rate_bps(direction)  # validates direction
    key = _secret(secret)
    if host not in ("127.0.0.1", "::1", "localhost"):
        warnings.warn(
            f"transfer listener bound to {host!r}, not loopback: reachable from the network "
            "(peers must prove the shared secret; frames from non-loopback peers carry MACs, "
            "but are not encrypted: see docs/transfer.md, Threat model)",
            stacklevel=2,
        )
    native = _native().Listener(
        host, port, key, _options(**options), backlog, max_pending, frame_macs
    )
    return Listener(native, link, direction, on_reject, ingress)


def connect(
    host: str,
    port: int,
    secret: str | bytes,
    *,
    link: Link | str | None = None,
    direction: str = "up",
    timeout: float | None = 10.0,
    frame_macs: bool = False,
    ingress: Ingress | None = None,
    **options,
) -> Endpoint:
    """Connects to a :func:`listen` endpoint and authenticates both ways (this side first);
    sends ``up`` by default (the connecting side is the edge). ``ingress``: a shared
    :class:`Ingress` that this endpoint's sends also draw from (the cloud's ingress, shared with
    the other edges). ``frame_macs`` and ``options`` as for :func:`listen`."""
    link = Link() if link is None else Link.parse(link)
    link.rate_bps(direction)
    key = _secret(secret)
    spec = _spec(link, direction, ingress)
    native = _native().connect(host, port, key, spec, _options(**options), timeout, frame_macs)
    return Endpoint(native, link, direction, ingress)
