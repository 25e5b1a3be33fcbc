"""The emulated link: rates, latency, jitter, outages.

Pure Python (no torch, no native code): a :class:`Link` is a value that endpoints turn into the
engine's token-bucket emulator, one direction each (the edge sends ``up``, the cloud ``down``).
Presets and link strings are :mod:`hierbench.spec.links`' (one grammar for the whole project).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from hierbench.errors import ConfigError
from hierbench.spec.links import PRESETS, LinkSpec, format_rate, parse_link

__all__ = ["PRESETS", "Link"]


@dataclass(frozen=True)
class Link:
    """An emulated edge-cloud link, both directions.

    Args:
        rate_bps_up: edge -> cloud rate in bit/s (``math.inf``: unshaped).
        rate_bps_down: cloud -> edge rate in bit/s; ``None``: same as up.
        latency_s: one-way latency: a message is delivered at (transmission end + latency),
            in order.
        burst_bytes: token-bucket depth; 0 is a pure rate limiter (the bucket starts full).
        jitter_s: extra per-message delay, uniform in ``[0, jitter_s]``, drawn from
            ``(seed, seq)``; order is still kept.
        outages: ``(start_s, end_s)`` intervals, relative to the endpoint's creation, in which
            the link is down: transmission pauses, nothing is lost.
        seed: jitter seed.

    The transmission of ``n`` bytes from ``t`` takes ``ceil((8 n - credit) / rate)`` ns, so in
    virtual time the engine's timestamps are exact integers of nanoseconds.
    """

    rate_bps_up: float = math.inf
    rate_bps_down: float | None = None
    latency_s: float = 0.0
    burst_bytes: int = 0
    jitter_s: float = 0.0
    outages: tuple[tuple[float, float], ...] = field(default=())
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rate_bps_up", "rate_bps_down"):
            v = getattr(self, name)
            if v is None and name == "rate_bps_down":
                continue
            if not isinstance(v, int | float) or math.isnan(v) or v < 1:
                raise ValueError(f"{name} must be >= 1 bit/s or math.inf, got {v!r}")
        for name in ("latency_s", "jitter_s"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if not isinstance(self.burst_bytes, int) or self.burst_bytes < 0:
            raise ValueError(f"burst_bytes must be an int >= 0, got {self.burst_bytes!r}")
        outs = []
        for o in self.outages:
            try:
                a, b = (float(x) for x in o)
            except (TypeError, ValueError):
                raise ValueError(f"an outage is a (start_s, end_s) pair, got {o!r}") from None
            if not (0 <= a < b) or math.isinf(b):
                raise ValueError(f"outage {o!r} must satisfy 0 <= start < end < inf")
            outs.append((a, b))
        object.__setattr__(self, "outages", tuple(sorted(outs)))

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def preset(cls, name: str, **overrides) -> Link:
        """A PAPER.md preset: ``3g``, ``4g``, ``wifi`` or ``lan``; keywords override fields."""
        key = name.strip().lower() if isinstance(name, str) else name
        if key not in PRESETS:
            raise ConfigError(f"unknown link preset {name!r}: choose one of {', '.join(PRESETS)}")
        return replace(cls.from_spec(PRESETS[key]), **overrides)

    @classmethod
    def from_spec(cls, spec: LinkSpec) -> Link:
        """The emulated link a :class:`~hierbench.spec.links.LinkSpec` describes (no burst,
        jitter or outages)."""
        down = None if spec.down_bps == spec.up_bps else spec.down_bps
        return cls(rate_bps_up=spec.up_bps, rate_bps_down=down, latency_s=spec.latency_s)

    @classmethod
    def parse(cls, spec: str | Link) -> Link:
        """A link from a command-line string (:func:`hierbench.spec.links.parse_link`: a preset,
        ``4g/50ms``, ``20mbit``, ``20mbit/5ms``, ``10mbit:40mbit/25ms``, ``inf``)."""
        if isinstance(spec, Link):
            return spec
        return cls.from_spec(parse_link(spec))

    # -- derived --------------------------------------------------------------------------------

    @property
    def down_bps(self) -> float:
        return self.rate_bps_up if self.rate_bps_down is None else self.rate_bps_down

    def rate_bps(self, direction: str) -> float:
        """The rate of ``"up"`` (edge -> cloud) or ``"down"`` (cloud -> edge)."""
        if direction == "up":
            return self.rate_bps_up
        if direction == "down":
            return self.down_bps
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")

    def transmission_s(self, nbytes: int, direction: str = "up") -> float:
        """Seconds the link needs to send ``nbytes`` (rate only, empty bucket)."""
        rate = self.rate_bps(direction)
        return 0.0 if math.isinf(rate) else nbytes * 8 / rate

    def message_s(self, nbytes: int, direction: str = "up") -> float:
        """Seconds from the start of transmission to delivery of one message on an idle link."""
        return self.transmission_s(nbytes, direction) + self.latency_s

    def __str__(self) -> str:
        def fmt(bps: float) -> str:
            return "unshaped" if math.isinf(bps) else format_rate(bps)

        rates = fmt(self.rate_bps_up)
        if self.down_bps != self.rate_bps_up:
            rates = f"{rates} up / {fmt(self.down_bps)} down"
        parts = [rates, f"{self.latency_s * 1e3:g} ms"]
        if self.burst_bytes:
            parts.append(f"burst {self.burst_bytes} B")
        if self.jitter_s:
            parts.append(f"jitter {self.jitter_s * 1e3:g} ms")
        if self.outages:
            parts.append(f"{len(self.outages)} outage(s)")
        return ", ".join(parts)
