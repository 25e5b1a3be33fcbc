"""The emulated link: rates, latency, jitter, outages, and the presets from PAPER.md.

Pure Python (no torch, no native code): a :class:`Link` is a value that endpoints turn into the
engine's token-bucket emulator, one direction each (the edge sends ``up``, the cloud ``down``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

from hierbench.errors import ConfigError

__all__ = ["PRESETS", "Link"]

MBIT = 1_000_000

# PAPER.md, "Link presets" (the project's choice; one-way latency).
PRESETS: dict[str, dict[str, float]] = {
    "3g": {"rate_bps_up": 1 * MBIT, "rate_bps_down": 4 * MBIT, "latency_s": 0.075},
    "4g": {"rate_bps_up": 10 * MBIT, "rate_bps_down": 40 * MBIT, "latency_s": 0.025},
    "wifi": {"rate_bps_up": 50 * MBIT, "rate_bps_down": 50 * MBIT, "latency_s": 0.005},
    "lan": {"rate_bps_up": 1000 * MBIT, "rate_bps_down": 1000 * MBIT, "latency_s": 0.0002},
}

_RATE_UNITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
_SYNTAX = (
    "use a preset ({presets}) or RATE[:DOWN_RATE][/LATENCY], with rates like 500kbit, 20mbit, "
    "1gbit or inf (bits per second, tc-style units) and latencies like 0.2ms, 25ms, 1s; a "
    "preset may take a latency too. Examples: '3g', '20mbit', '20mbit/5ms', "
    "'10mbit:40mbit/25ms', '4g/50ms'"
)


def _syntax() -> str:
    return _SYNTAX.format(presets=", ".join(PRESETS))


def _parse_rate(text: str, spec: str) -> float:
    t = text.strip().lower()
    if t in ("inf", "unlimited", "unshaped"):
        return math.inf
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]+)", t)
    if not m or m.group(2) not in _RATE_UNITS:
        hint = " ('mbps' is ambiguous: write mbit)" if t.endswith("bps") else ""
        raise ConfigError(f"bad rate {text!r} in link {spec!r}{hint}: {_syntax()}")
    return float(m.group(1)) * _RATE_UNITS[m.group(2)]


def _parse_time(text: str, spec: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*(s|ms|us)", text.strip().lower())
    if not m:
        raise ConfigError(f"bad latency {text!r} in link {spec!r}: {_syntax()}")
    return float(m.group(1)) * _TIME_UNITS[m.group(2)]


def _fmt_rate(bps: float) -> str:
    if math.isinf(bps):
        return "unshaped"
    for unit, div in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= div:
            return f"{bps / div:g} {unit}"
    return f"{bps:g} bit/s"


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
        return cls(**{**PRESETS[key], **overrides})

    @classmethod
    def parse(cls, spec: str | Link) -> Link:
        """A link from a command-line string: a preset, ``20mbit``, ``20mbit/5ms``,
        ``10mbit:40mbit/25ms`` (up:down), ``4g/50ms`` (preset, other latency), ``inf``."""
        if isinstance(spec, Link):
            return spec
        if not isinstance(spec, str) or not spec.strip():
            raise ConfigError(f"empty link spec {spec!r}: {_syntax()}")
        text = spec.strip().lower()
        rates, _, latency = text.partition("/")
        if rates in PRESETS:
            link = cls.preset(rates)
            return replace(link, latency_s=_parse_time(latency, spec)) if latency else link
        up, _, down = rates.partition(":")
        if not re.fullmatch(r"[0-9.]+\s*[a-z]+|inf|unlimited|unshaped", up.strip()):
            raise ConfigError(f"unknown link {spec!r}: {_syntax()}")
        return cls(
            rate_bps_up=_parse_rate(up, spec),
            rate_bps_down=_parse_rate(down, spec) if down else None,
            latency_s=_parse_time(latency, spec) if latency else 0.0,
        )

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
        rates = _fmt_rate(self.rate_bps_up)
        if self.down_bps != self.rate_bps_up:
            rates = f"{rates} up / {_fmt_rate(self.down_bps)} down"
        parts = [rates, f"{self.latency_s * 1e3:g} ms"]
        if self.burst_bytes:
            parts.append(f"burst {self.burst_bytes} B")
        if self.jitter_s:
            parts.append(f"jitter {self.jitter_s * 1e3:g} ms")
        if self.outages:
            parts.append(f"{len(self.outages)} outage(s)")
        return ", ".join(parts)
