"""The shared ingress: one token bucket that many sending endpoints draw from, besides their own
links (a cell tower, a datacentre uplink: what all edges of a fleet share on the way into the
cloud).

Pass one :class:`Ingress` as ``ingress=`` to every endpoint whose sends it shapes
(:func:`~hierbench.transfer.connect` on each edge, :func:`~hierbench.transfer.inprocess_pair`'s
edge side). It shapes only what those endpoints send, edge -> cloud: the downlink is not shared
(each direction of each connection keeps its own link). Each message goes chunk by chunk (TCP:
~1 ms of the slower rate, at least 4 KiB; in process: the whole message); a chunk enters when
both its own link and the ingress let it, and the ingress serves chunks first come, first
served. ``stats()`` reports ``ingress_wait_s``: how much later the ingress let this endpoint's
chunks finish than its own link alone would have (0: the ingress never bound).

Two kinds of state, the same arithmetic (csrc/transfer/ingress.h, in integer nanoseconds):

* in this process (``path=None``): endpoints of one process, on one clock (a
  :class:`~hierbench.transfer.VirtualClock` included, for exact tests);
* in a file (``path``, e.g. under ``/dev/shm``) mapped by every process of one machine: the edge
  processes of a fleet. The file holds the rate and depth; attaching checks them. Real clock only
  (the machine's monotonic clock is what its processes share). The file (128 bytes, mode 0600:
  the processes must run as one user) is not removed when they end. ``Ingress.create`` refuses an
  existing file; ``Ingress(rate, path=...)`` attaches to one of the same rate and depth, *with
  its state*: remove the file between runs (the fleet's local launcher does), since a state left
  by an earlier run (worse, from before a reboot: the monotonic clock restarts) delays the new
  run's chunks.

The bucket (rate ``R`` bit/s, depth ``b`` bytes) starts full; a chunk of ``n`` bytes costs
``ceil(8 n 1e9 / R)`` ns of credit, the depth is ``ceil(8 b 1e9 / R)`` ns. That is the link
emulator's token bucket up to at most 1 ns per chunk (none when ``8e9 n / R`` is an integer, as
at 8 Mbit/s), never faster.
"""

from __future__ import annotations

import math
import os

from hierbench import _ext
from hierbench.errors import ConfigError, TransferError
from hierbench.spec.links import format_rate, parse_rate

__all__ = ["Ingress"]


def _rate_bps(rate: float | str) -> int:
    """Bit/s as an int >= 1 from a number or a rate string (``"2mbit"``, as in link strings)."""
    if isinstance(rate, str):
        value = parse_rate(rate)
    elif isinstance(rate, bool) or not isinstance(rate, int | float):
        raise ValueError(
            f"an ingress rate is bit/s (a number) or a string like '2mbit', got {rate!r}"
        )
    else:
        value = rate
    if math.isnan(value) or math.isinf(value) or value < 1:
        raise ValueError(
            f"an ingress rate must be a finite number of bit/s >= 1 (an ingress always shapes; "
            f"leave it out for an unshared link), got {rate!r}"
        )
    return round(value)


def _burst(burst_bytes: int) -> int:
    if isinstance(burst_bytes, bool) or not isinstance(burst_bytes, int) or burst_bytes < 0:
        raise ValueError(f"burst_bytes must be an int >= 0, got {burst_bytes!r}")
    return burst_bytes


class Ingress:
    """A token bucket of ``rate`` (bit/s, or a string such as ``"20mbit"``) and depth
    ``burst_bytes`` (0: a pure rate limiter), shared by the endpoints it is given to.

    ``path=None``: in this process. With a ``path``: shared through that file by the processes
    of this machine; it is created if absent, else attached to, and then it must hold the same
    rate and depth (:class:`~hierbench.errors.ConfigError` otherwise). :meth:`create` and
    :meth:`attach` do one or the other only.
    """

    def __init__(
        self, rate: float | str, burst_bytes: int = 0, path: str | os.PathLike | None = None
    ):
        rate_bps, burst = _rate_bps(rate), _burst(burst_bytes)
        if path is None:
            self._native = _ext.load().transfer.Ingress(rate_bps, burst)
            return
        path = os.fspath(path)
        for _ in range(2):  # a creator racing us: its file is complete once it exists
            if os.path.exists(path):
                self._native = Ingress.attach(path, rate_bps, burst)._native
                return
            try:
                self._native = _ext.load().transfer.Ingress.create(path, rate_bps, burst)
                return
            except TransferError:
                if not os.path.exists(path):
                    raise
        raise TransferError(f"the ingress file {path} keeps appearing and vanishing")

    @classmethod
    def _wrap(cls, native) -> Ingress:
        self = cls.__new__(cls)
        self._native = native
        return self

    @classmethod
    def create(cls, path: str | os.PathLike, rate: float | str, burst_bytes: int = 0) -> Ingress:
        """A new ingress file at ``path`` (:class:`~hierbench.errors.TransferError` if it exists:
        one process creates, the others :meth:`attach`)."""
        native = _ext.load().transfer.Ingress.create(
            os.fspath(path), _rate_bps(rate), _burst(burst_bytes)
        )
        return cls._wrap(native)

    @classmethod
    def attach(
        cls,
        path: str | os.PathLike,
        rate: float | str | None = None,
        burst_bytes: int | None = None,
    ) -> Ingress:
        """The ingress in the file at ``path`` (made by :meth:`create`; a missing or foreign file
        is a :class:`~hierbench.errors.TransferError`). ``rate`` / ``burst_bytes``: what the
        caller expects the file to hold (:class:`~hierbench.errors.ConfigError` if it holds
        something else); None: take what it holds."""
        path = os.fspath(path)
        self = cls._wrap(_ext.load().transfer.Ingress.attach(path))
        want_rate = None if rate is None else _rate_bps(rate)
        want_burst = None if burst_bytes is None else _burst(burst_bytes)
        if (want_rate is not None and want_rate != self.rate_bps) or (
            want_burst is not None and want_burst != self.burst_bytes
        ):
            asked = (
                f"{'any rate' if want_rate is None else f'{want_rate} bit/s'}, "
                f"burst {'any' if want_burst is None else f'{want_burst} B'}"
            )
            raise ConfigError(
                f"the ingress file {path} holds {self.rate_bps} bit/s, burst {self.burst_bytes} B, "
                f"but {asked} was asked for: every process must use the same ingress (remove the "
                "file if it is left over from another run)"
            )
        return self

    @property
    def rate_bps(self) -> int:
        return self._native.rate_bps

    @property
    def burst_bytes(self) -> int:
        return self._native.burst_bytes

    @property
    def tolerance_ns(self) -> int:
        """The depth in nanoseconds of transmission: ``ceil(8 burst_bytes 1e9 / rate_bps)``."""
        return self._native.tolerance_ns

    @property
    def path(self) -> str | None:
        """The shared file, or None for an in-process ingress."""
        return self._native.path or None

    def reserve(self, nbytes: int, t_ns: int) -> tuple[int, int]:
        """Reserves a chunk of ``nbytes`` that may enter at ``t_ns`` (engine clock) and returns
        ``(start_ns, end_ns)``: when its first byte enters and its last one has passed. This is
        what endpoints do for each chunk; calling it takes the ingress's capacity as they do."""
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            raise ValueError(f"nbytes must be an int >= 0, got {nbytes!r}")
        if isinstance(t_ns, bool) or not isinstance(t_ns, int) or t_ns < 0:
            raise ValueError(f"t_ns must be an int >= 0, got {t_ns!r}")
        return self._native.reserve(nbytes, t_ns)

    def __repr__(self) -> str:
        where = f"shared: {self.path}" if self.path else "in-process"
        return f"Ingress({format_rate(self.rate_bps)}, burst {self.burst_bytes} B, {where})"
