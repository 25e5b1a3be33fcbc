"""Link presets and the one grammar of link strings, shared by the engine and the runtime model.

A :class:`LinkSpec` describes an edge–cloud link: uplink (edge → cloud) and downlink (cloud →
edge) rates in bit/s and the one-way latency in seconds. A message of ``b`` bytes takes
``8·b / R + τ`` to arrive (PAPER.md, "Reconstructed runtime model"). The transfer engine's
``hierbench.transfer.Link`` (token bucket, outages, jitter) is built from one; the runtime model
predicts from one.

The presets are the project's choice (``../shared/PAPER.md``, "Conventions"):

======  =============  ===============  ===========
preset  up (Mbit/s)    down (Mbit/s)    latency
======  =============  ===============  ===========
3g      1              4                75 ms
4g      10             40               25 ms
wifi    50             50               5 ms
lan     1000           1000             0.2 ms
======  =============  ===============  ===========

Strings accepted by :func:`parse_link` (case-insensitive, spaces ignored)::

    3g | 4g | wifi | lan                 a preset
    4g/50ms                              a preset with another one-way latency
    20mbit                               20 Mbit/s both ways, no latency
    20mbit/5ms                           20 Mbit/s both ways, 5 ms one way
    1mbit:4mbit/75ms                     1 Mbit/s up, 4 Mbit/s down, 75 ms
    rates: 500kbit, 2.5gbit, 1e6bit      units bit, kbit, mbit, gbit, tbit (SI: 1 kbit = 1000 bit)
    unshaped: inf | unlimited | unshaped
    latency units: s, ms, us             e.g. "/0.2ms", "/1s"

A rate needs its unit, and ``bps``-style units are refused: ``tc`` reads ``mbps`` as megabytes
per second, so that spelling is ambiguous.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from hierbench.errors import ConfigError

__all__ = ["PRESETS", "LinkSpec", "format_rate", "parse_latency", "parse_link", "parse_rate"]


@dataclass(frozen=True)
class LinkSpec:
    """An edge–cloud link: rates in bit/s (``math.inf``: unshaped), one-way latency in seconds."""

    up_bps: float
    down_bps: float
    latency_s: float = 0.0
    name: str = ""

    def __post_init__(self) -> None:
        for field in ("up_bps", "down_bps"):
            v = getattr(self, field)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
                raise ValueError(f"LinkSpec.{field} must be a positive number, got {v!r}")
        if not (isinstance(self.latency_s, (int, float)) and 0 <= self.latency_s < math.inf):
            raise ValueError(f"LinkSpec.latency_s must be finite and >= 0, got {self.latency_s!r}")
        if not self.name:
            object.__setattr__(self, "name", self.describe())

    def up_time(self, nbytes: float) -> float:
        """Seconds for an uplink message of ``nbytes`` bytes: ``8·nbytes / R_up + τ``."""
        return 8.0 * nbytes / self.up_bps + self.latency_s

    def down_time(self, nbytes: float) -> float:
        """Seconds for a downlink message of ``nbytes`` bytes: ``8·nbytes / R_down + τ``."""
        return 8.0 * nbytes / self.down_bps + self.latency_s

    def with_up_rate(self, up_bps: float) -> LinkSpec:
        """The same link shape at uplink rate ``up_bps``: the downlink keeps its ratio to the
        uplink (1 if the uplink was infinite), the latency is kept."""
        ratio = 1.0 if math.isinf(self.up_bps) else self.down_bps / self.up_bps
        return replace(self, up_bps=up_bps, down_bps=up_bps * ratio, name="")

    def describe(self) -> str:
        """``"1 Mbit/s up, 4 Mbit/s down, 75 ms"``."""
        if self.up_bps == self.down_bps:
            rates = f"{format_rate(self.up_bps)} both ways"
        else:
            rates = f"{format_rate(self.up_bps)} up, {format_rate(self.down_bps)} down"
        return f"{rates}, {self.latency_s * 1e3:g} ms"


#: The project's link presets (PAPER.md, "Conventions").
PRESETS: dict[str, LinkSpec] = {
    "3g": LinkSpec(1e6, 4e6, 75e-3, "3g"),
    "4g": LinkSpec(10e6, 40e6, 25e-3, "4g"),
    "wifi": LinkSpec(50e6, 50e6, 5e-3, "wifi"),
    "lan": LinkSpec(1000e6, 1000e6, 0.2e-3, "lan"),
}

_RATE_UNITS = {"bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
_UNSHAPED = ("inf", "infinite", "infinity", "unlimited", "unshaped")
#: The range of a written rate (bit/s): from 1 bit/s (the engine's least) to 10 Tbit/s (faster
#: is unshaped in effect: write ``inf``). Issue 15 item 8: a 400-digit rate was unshaped silently.
MIN_RATE_BPS, MAX_RATE_BPS = 1.0, 1e13
#: The largest one-way latency a link string may give (a latency of 10^23 s hung the run).
MAX_LATENCY_S = 60.0
_MAX_NUMBER_CHARS = 32
_NUM = r"(\d+(?:\.\d*)?(?:e[+-]?\d+)?|\.\d+(?:e[+-]?\d+)?)"


def format_rate(bps: float) -> str:
    """``1e6`` → ``"1 Mbit/s"``; ``inf`` → ``"inf bit/s"``."""
    if math.isinf(bps):
        return "inf bit/s"
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:g} {unit}"
    return f"{bps:g} bit/s"


def _bad(spec: object, why: str) -> ConfigError:
    return ConfigError(
        f"invalid link {spec!r}: {why}; use a preset ({', '.join(PRESETS)}), optionally with a "
        "latency ('4g/50ms'), or RATE[:DOWN_RATE][/LATENCY] such as '20mbit', '20mbit/5ms' or "
        "'1mbit:4mbit/75ms' (rates in bit, kbit, mbit, gbit, tbit or inf; latency in s, ms, us)"
    )


def parse_rate(text: str, spec: str | None = None) -> float:
    """``"20mbit"`` → ``2e7`` bit/s; ``"inf"`` → ``math.inf``. Raises ConfigError."""
    t = text.strip().lower().removesuffix("/s")
    if t in _UNSHAPED:
        return math.inf
    m = re.fullmatch(_NUM + r"\s*([a-z]*)", t)
    where = spec if spec is not None else text
    if not m or m.group(2) not in _RATE_UNITS:
        if m and m.group(2).endswith(("bps", "b")):
            raise _bad(where, f"unit {m.group(2)!r} is ambiguous (bits or bytes?); write 'mbit'")
        if m and not m.group(2):
            raise _bad(where, f"the rate {text!r} has no unit")
        raise _bad(where, f"cannot read the rate {text!r}")
    if len(m.group(1)) > _MAX_NUMBER_CHARS:
        raise _bad(where, f"the rate {text[:40]!r}... has more than {_MAX_NUMBER_CHARS} digits")
    value = float(m.group(1)) * _RATE_UNITS[m.group(2)]
    if not value > 0:
        raise _bad(where, "the rate must be > 0")
    if not MIN_RATE_BPS <= value <= MAX_RATE_BPS:
        raise _bad(
            where,
            f"the rate {text!r} is {value:g} bit/s, outside {MIN_RATE_BPS:g} bit/s to "
            f"{format_rate(MAX_RATE_BPS)} (write 'inf' for an unshaped link)",
        )
    return value


def parse_latency(text: str, spec: str | None = None) -> float:
    """``"25ms"`` → ``0.025`` s. Raises ConfigError."""
    m = re.fullmatch(_NUM + r"\s*(s|ms|us)", text.strip().lower())
    where = spec if spec is not None else text
    if not m:
        raise _bad(where, f"cannot read the latency {text!r} (units: s, ms, us)")
    if len(m.group(1)) > _MAX_NUMBER_CHARS:
        raise _bad(where, f"the latency {text[:40]!r}... has more than {_MAX_NUMBER_CHARS} digits")
    value = float(m.group(1)) * _TIME_UNITS[m.group(2)]
    if not value <= MAX_LATENCY_S:
        raise _bad(where, f"the latency {text!r} is over {MAX_LATENCY_S:g} s")
    return value


def parse_link(spec: str | LinkSpec) -> LinkSpec:
    """A :class:`LinkSpec` from a preset name or a link string (see the module docstring).

    Raises:
        ConfigError: not a preset nor a readable link string; the message lists the presets.
    """
    if isinstance(spec, LinkSpec):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"a link is a str or LinkSpec, got {type(spec).__name__}")
    key = spec.strip().lower().replace(" ", "")
    key = re.sub(r"(bit|inf|infinite|infinity|unlimited)/s(?=$|[:/])", r"\1", key)  # "20mbit/s"
    if not key:
        raise _bad(spec, "the link is empty")
    if key in PRESETS:
        return PRESETS[key]
    rates, slash, latency = key.partition("/")
    if rates in PRESETS:
        preset = PRESETS[rates]
        if not slash:
            return preset
        return replace(preset, latency_s=parse_latency(latency, spec), name=key)
    up, colon, down = rates.partition(":")
    if colon and not down:
        raise _bad(spec, "expected RATE[:DOWN_RATE][/LATENCY]")
    up_bps = parse_rate(up, spec)
    down_bps = parse_rate(down, spec) if colon else up_bps
    lat = parse_latency(latency, spec) if slash else 0.0
    return LinkSpec(up_bps, down_bps, lat, name=key)
