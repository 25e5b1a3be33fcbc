"""Bytes on the wire, torch-free: codec settings and the size of what crosses the link.

The sizes mirror the frame format of ``hierbench.codec`` (``ActivationCodec``, frame version 1):

- a frame is ``60 + 8·ndim`` bytes of header and CRC (:func:`frame_overhead_bytes`), then a body;
- a raw fp32 body is ``4·numel`` bytes;
- a quantized body (per-group min/max affine quantization, groups of ``group_size`` consecutive
  values of the flattened tensor, default 128) is the packed codes, ``ceil(numel·bits / 8)``
  bytes (:func:`payload_bytes`), plus one float32 scale and one float32 offset per group,
  ``8·ceil(numel / group_size)`` bytes (:func:`quant_overhead_bytes`);
- with zstd, the body shrinks by a data-dependent ratio (original / compressed) that only a
  measurement on real activations can give: profiles carry a ``zstd_ratio_<wire>`` column that
  defaults to 1.0 (no gain assumed) until it is measured.

Labels travel with the activations (and with the raw batch in the cloud-only baseline); their
size is a convention (:func:`label_bytes`): one byte per sample (default; what an implementation
sends for K ≤ 256) or ``ceil(log2 K)`` bits per sample, packed.

A :class:`CodecSetting` also carries the codec's encode and decode *rates* (bytes of fp32
activations per second) — inputs to the runtime model, measured by the codec's benchmarks; the
default (infinite) means "free", an assumption reports must state.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from hierbench.errors import ConfigError

__all__ = [
    "DEFAULT_CODECS",
    "DEFAULT_GROUP_SIZE",
    "LABEL_CONVENTIONS",
    "WIRE_BITS",
    "CodecSetting",
    "encoded_bytes",
    "frame_overhead_bytes",
    "label_bytes",
    "parse_codec",
    "payload_bytes",
    "quant_overhead_bytes",
]

#: Wire names (as ``hierbench.codec`` spells them) → bits per value.
WIRE_BITS: dict[str, int] = {"fp32": 32, "q8": 8, "q4": 4, "q2": 2}
#: The codec's default quantization group (values per scale/offset pair).
DEFAULT_GROUP_SIZE = 128
#: How labels are counted: ``"byte"`` (8 bits a sample) or ``"log2"`` (ceil(log2 K) bits, packed).
LABEL_CONVENTIONS = ("byte", "log2")

_FRAME_FIXED = 60  # 56-byte fixed header + 4-byte CRC-32
_GROUP_PARAM_BYTES = 8  # float32 scale + float32 offset


def frame_overhead_bytes(ndim: int = 4) -> int:
    """Header + CRC bytes of one codec frame holding an ``ndim``-dimensional tensor."""
    return _FRAME_FIXED + 8 * ndim


def payload_bytes(numel: int, bits: int) -> int:
    """Packed payload: ``ceil(numel · bits / 8)``."""
    return -(-numel * bits // 8)


def quant_overhead_bytes(numel: int, group_size: int = DEFAULT_GROUP_SIZE) -> int:
    """Per-group float32 scale + offset: ``8 · ceil(numel / group_size)`` bytes."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    return _GROUP_PARAM_BYTES * -(-numel // group_size)


def label_bytes(batch: int, num_classes: int, convention: str = "byte") -> int:
    """Bytes of ``batch`` labels under ``convention`` (see :data:`LABEL_CONVENTIONS`)."""
    if convention == "byte":
        return batch
    if convention == "log2":
        bits = max(1, math.ceil(math.log2(num_classes)))
        return -(-batch * bits // 8)
    raise ConfigError(f"unknown label convention {convention!r}; valid: {LABEL_CONVENTIONS}")


@dataclass(frozen=True)
class CodecSetting:
    """One codec configuration as the runtime model sees it.

    Args:
        wire: ``"fp32"``, ``"q8"``, ``"q4"`` or ``"q2"`` (:data:`WIRE_BITS`).
        zstd: a zstd stage after the wire; its gain is the profile's measured ratio (default 1.0)
            unless ``zstd_ratio`` overrides it.
        group_size: quantization group (values per scale/offset pair).
        zstd_ratio: original/compressed body size; ``None`` → the profile's column.
        encode_Bps, decode_Bps: encode/decode rates on the edge profile's device, in bytes of
            fp32 activations per second (``math.inf``: free, the default assumption).
    """

    wire: str = "q8"
    zstd: bool = False
    group_size: int = DEFAULT_GROUP_SIZE
    zstd_ratio: float | None = None
    encode_Bps: float = math.inf
    decode_Bps: float = math.inf

    def __post_init__(self) -> None:
        if self.wire not in WIRE_BITS:
            raise ConfigError(f"unknown codec wire {self.wire!r}; valid: {', '.join(WIRE_BITS)}")
        if self.zstd_ratio is not None and not self.zstd_ratio > 0:
            raise ValueError(f"zstd_ratio must be > 0, got {self.zstd_ratio}")
        for name in ("encode_Bps", "decode_Bps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    @property
    def bits(self) -> int:
        return WIRE_BITS[self.wire]

    @property
    def name(self) -> str:
        """``"q8"``, ``"q4+zstd"``, ``"fp32"``."""
        return self.wire + ("+zstd" if self.zstd else "")

    def encode_time(self, numel: int) -> float:
        """Seconds to encode ``numel`` fp32 values (0 if the rate is infinite)."""
        return 0.0 if math.isinf(self.encode_Bps) else 4.0 * numel / self.encode_Bps

    def decode_time(self, numel: int) -> float:
        """Seconds to decode ``numel`` fp32 values (0 if the rate is infinite)."""
        return 0.0 if math.isinf(self.decode_Bps) else 4.0 * numel / self.decode_Bps


#: The codec settings the separation-point search tries by default.
DEFAULT_CODECS: tuple[CodecSetting, ...] = tuple(CodecSetting(w) for w in WIRE_BITS)


def encoded_bytes(
    numel: int,
    codec: CodecSetting,
    *,
    ndim: int = 4,
    zstd_ratio: float = 1.0,
    frame: bool = True,
) -> int:
    """Bytes of one frame holding ``numel`` fp32 values (a whole batch) under ``codec``.

    ``body = 4·numel`` (fp32) or ``payload_bytes(numel, bits) + quant_overhead_bytes(numel)``;
    with zstd the body is divided by ``codec.zstd_ratio`` (or ``zstd_ratio``); then
    ``frame_overhead_bytes(ndim)`` is added unless ``frame=False``.
    """
    if codec.wire == "fp32":
        body = 4 * numel
    else:
        body = payload_bytes(numel, codec.bits) + quant_overhead_bytes(numel, codec.group_size)
    if codec.zstd:
        ratio = codec.zstd_ratio if codec.zstd_ratio is not None else zstd_ratio
        body = math.ceil(body / ratio)
    return body + (frame_overhead_bytes(ndim) if frame else 0)


_ALIASES = {"32": "fp32", "float32": "fp32", "8": "q8", "4": "q4", "2": "q2"}


def parse_codec(spec: str | CodecSetting) -> CodecSetting:
    """``"q8"``, ``"8"``, ``"8bit"``, ``"int8"``, ``"fp32"``, ``"q4+zstd"``, ``"q4+zstd1"`` →
    :class:`CodecSetting` (zstd level is not modelled: any ``+zstdN`` is ``zstd=True``).

    Raises:
        ConfigError: unknown wire; the message lists the valid ones.
    """
    if isinstance(spec, CodecSetting):
        return spec
    text = spec.strip().lower()
    zstd = False
    m = re.fullmatch(r"(.+?)\+zstd\d*", text)
    if m:
        text, zstd = m.group(1), True
    text = re.sub(r"^(int|q)?(\d+)(bits?)?$", lambda g: g.group(2), text)
    wire = _ALIASES.get(text, text)
    if wire not in WIRE_BITS:
        raise ConfigError(
            f"unknown codec {spec!r}; valid: {', '.join(WIRE_BITS)} (optionally +zstd), "
            "or 32/8/4/2 bits"
        )
    return CodecSetting(wire, zstd=zstd)
