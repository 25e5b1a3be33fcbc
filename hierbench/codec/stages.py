"""The body's compression stages (none / lz4 / zstd) and the ``auto`` choice among them.

A frame's body (aux + payload) can go through one byte-level stage before the CRC:

* ``none``: stored as is;
* ``lz4``: one LZ4 *block* (the raw block format, no LZ4 frame, no size prefix: the header's
  ``A + P`` is the decompressed size), python-lz4's ``lz4.block`` in its default mode. python-lz4
  is an **optional** dependency (``pip install hierbench[lz4]`` or ``pip install lz4``): without
  it, a codec asked for lz4 raises :class:`~hierbench.errors.ConfigError` and a decoder given an
  lz4 frame raises :class:`~hierbench.errors.CodecError`, both saying to install ``lz4``;
* ``zstd1``: one zstd frame at level 1 (any zstd level is a ``CodecConfig`` setting; ``auto``
  considers level 1).

``auto`` picks, for the link the frames go over, the stage with the shortest **send time** of one
batch::

    send_time(stage) = encode_s + 8 * out_bytes / link_bps + decode_s

from speeds *measured* on the body being sent (:func:`measure_stages`: each stage's compress and
decompress timed on this CPU, and its output size): with a fast link compression costs more time
than it saves, with a slow one the smaller body wins. Between two stages a and b the crossover is
the rate where their send times are equal (:func:`crossover_rate`). ``decode_s`` is measured on
the encoding side's CPU (the receiver's is not known there): pass ``decode_scale`` to
:func:`choose_stage` when the receiver is faster or slower.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import zstandard

from hierbench.errors import CodecError, ConfigError

#: The stages ``auto`` chooses among, in the order ties are broken (the simplest first).
AUTO_STAGES = ("none", "lz4", "zstd1")
#: LZ4_MAX_INPUT_SIZE of lz4.h: the largest body one LZ4 block holds.
LZ4_MAX_INPUT = 0x7E000000

_INSTALL_HINT = (
    "the lz4 compression stage needs the python package 'lz4' (an optional dependency of "
    "hierbench: pip install lz4, or pip install hierbench[lz4])"
)


def lz4_block():
    """python-lz4's ``lz4.block`` module, or :class:`ConfigError` saying how to install it."""
    try:
        import lz4.block as block
    except ImportError as exc:
        raise ConfigError(_INSTALL_HINT) from exc
    return block


def lz4_available() -> bool:
    """Whether the lz4 stage can run here (python-lz4 importable)."""
    try:
        lz4_block()
    except ConfigError:
        return False
    return True


def lz4_compress(src) -> bytes:
    """One LZ4 block of ``src`` (default mode), without a size prefix."""
    n = memoryview(src).nbytes
    if n > LZ4_MAX_INPUT:
        raise CodecError(f"cannot encode: a {n}-byte body is over one LZ4 block's {LZ4_MAX_INPUT}")
    return lz4_block().compress(src, mode="default", store_size=False)


def lz4_decompress(body, content: int) -> bytes:
    """The ``content`` bytes of one LZ4 block; :class:`CodecError` unless it decodes to exactly
    that many (malformed, truncated or trailing data)."""
    try:
        block = lz4_block()
    except ConfigError as exc:
        raise CodecError(f"cannot decode an lz4 frame: {exc}") from None
    if content > LZ4_MAX_INPUT:
        raise CodecError(f"invalid frame: body: {content} bytes are over one LZ4 block's limit")
    try:
        out = block.decompress(body, uncompressed_size=content)
    except block.LZ4BlockError as exc:
        raise CodecError(f"invalid frame: body: lz4: {exc}") from None
    if len(out) != content:
        raise CodecError(f"invalid frame: body: lz4 gave {len(out)} bytes, expected {content}")
    return out


@dataclass(frozen=True)
class StageSpeed:
    """One stage measured on one body: seconds to compress and decompress it, bytes out."""

    stage: str
    in_bytes: int
    out_bytes: int
    encode_s: float
    decode_s: float

    def send_time(self, link_bps: float, decode_scale: float = 1.0) -> float:
        """encode + bytes over the link + decode, seconds (``decode_scale`` times decode_s)."""
        return self.encode_s + 8.0 * self.out_bytes / link_bps + decode_scale * self.decode_s

    @property
    def ratio(self) -> float:
        return self.in_bytes / self.out_bytes if self.out_bytes else float("nan")


def choose_stage(
    speeds: dict[str, StageSpeed] | list[StageSpeed], link_bps: float, decode_scale: float = 1.0
) -> str:
    """The stage with the shortest :meth:`StageSpeed.send_time` at ``link_bps`` bits/s (ties: the
    first in :data:`AUTO_STAGES` order, then the order given)."""
    items = list(speeds.values()) if isinstance(speeds, dict) else list(speeds)
    if not items:
        raise ValueError("choose_stage needs at least one measured stage")
    if not link_bps > 0:
        raise ValueError(f"link_bps must be > 0, got {link_bps!r}")
    order = {s: i for i, s in enumerate(AUTO_STAGES)}
    items.sort(key=lambda s: order.get(s.stage, len(order)))
    return min(items, key=lambda s: s.send_time(link_bps, decode_scale)).stage


def crossover_rate(a: StageSpeed, b: StageSpeed) -> float | None:
    """The link rate (bit/s) at which a and b take the same send time, or ``None`` when one is
    faster at every rate (a stage that is both quicker to run and smaller, or equal).

    send_time is c + 8 * out / R with c = encode + decode; equal when
    R = 8 * (out_a - out_b) / (c_b - c_a), which is positive only when the stage that costs more
    time sends fewer bytes."""
    dc = (b.encode_s + b.decode_s) - (a.encode_s + a.decode_s)
    db = a.out_bytes - b.out_bytes
    if dc == 0 or db == 0 or (dc > 0) != (db > 0):
        return None
    return 8.0 * db / dc


def _best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def measure_stages(
    body, stages=AUTO_STAGES, *, repeats: int = 3, zstd_level: int = 1
) -> dict[str, StageSpeed]:
    """Each stage's compress and decompress of ``body`` timed here (best of ``repeats``), and its
    output size. ``none`` costs 0 s and keeps every byte (the copy into the frame is paid by
    every stage alike). lz4 is measured only where python-lz4 is installed."""
    src = bytes(body) if not isinstance(body, bytes | bytearray) else body
    n = len(src)
    out: dict[str, StageSpeed] = {}
    for stage in stages:
        if stage == "none":
            out[stage] = StageSpeed(stage, n, n, 0.0, 0.0)
        elif stage == "lz4":
            if not lz4_available() or n > LZ4_MAX_INPUT:
                continue
            enc_s, comp = _best_of(lambda: lz4_compress(src), repeats)
            dec_s, _ = _best_of(lambda c=comp: lz4_decompress(c, n), repeats)
            out[stage] = StageSpeed(stage, n, len(comp), enc_s, dec_s)
        elif stage.startswith("zstd"):
            cctx = zstandard.ZstdCompressor(level=zstd_level)
            dctx = zstandard.ZstdDecompressor()
            enc_s, comp = _best_of(lambda z=cctx: z.compress(src), repeats)
            dec_s, _ = _best_of(lambda c=comp, z=dctx: z.decompress(c, max_output_size=n), repeats)
            out[stage] = StageSpeed(stage, n, len(comp), enc_s, dec_s)
        else:
            raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(AUTO_STAGES)}")
    return out
