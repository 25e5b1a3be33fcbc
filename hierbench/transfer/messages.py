"""What endpoints hand out: received messages, send slots, per-message records and stats."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Message", "Record", "SendSlot", "Stats"]


def _ns_to_s(ns: int | None) -> float | None:
    return None if ns is None else ns * 1e-9


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
    # how much later a shared ingress let this endpoint's sends finish than its own link alone
    # would have (0.0 without one, or while it never bound)
    ingress_wait_s: float = 0.0

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
            ingress_wait_s=d["ingress_wait_ns"] * 1e-9,
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
