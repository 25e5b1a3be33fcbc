"""Activation codec: tensor <-> bytes for activations crossing an edge-cloud link.

What crosses a cut is an activation tensor. :class:`ActivationCodec` turns it into one
self-describing, CRC-checked frame and back:

1. **payload**: the raw values (as given, or cast to a wire dtype: fp32 / fp16 / bf16), or a
   min/max affine quantization (:func:`hierbench.ops.quantize`, 8 / 4 / 2 bits, per tensor,
   channel or group) as packed codes plus per-group float32 scale and offset;
2. optionally, for raw wires only, the **ReLU-sparsity** transform (``sparse=True``): a bitmask of
   the non-zero elements plus the non-zero values (see "Sparsity" below for when it pays);
3. optionally a **zstandard** stage (python-zstandard) over all of that;
4. a little-endian header in front and a CRC-32 behind.

Choosing an API (as in python-zstandard): the one-shot :func:`encode` / :func:`decode` build a
codec per call; in a loop, build one :class:`ActivationCodec` and reuse it (it keeps its zstd
contexts and counters)::

    codec = ActivationCodec("q4+zstd1")              # or ActivationCodec(CodecConfig(...))
    frame = codec.encode(activation)                 # bytes
    x_hat = codec.decode(frame, device="cuda")       # == dequantize(quantize(activation))
    codec.stats.compression_ratio

Thread safety: an :class:`ActivationCodec` is **not** thread-safe. Its ``ZstdCompressor`` /
``ZstdDecompressor`` contexts (created once, reused by every call) and its counters must not be
used by two threads at once: use one codec per thread. Frames themselves are plain bytes.

Decoding trusts nothing. Every header field is checked (magic, version, known enum values,
``ndim <= 8``, dims >= 0, sizes bounded by ``max_frame_size`` and consistent with each other and
with the frame length, canonical zero padding), then the CRC, then the zstd frame's declared
content size, all **before** anything proportional to a declared size is allocated; any failure
raises :class:`hierbench.errors.CodecError` naming the field. Nothing is pickled or evaluated.
``max_frame_size`` (default 1 GiB) bounds every buffer the decoder allocates: the frame, the
decompressed body and the decoded tensor (the encoder enforces the same bounds, so whatever it
produces decodes under the same setting).

Frame format, version 1 (all integers little-endian; ``n = ndim``)
--------------------------------------------------------------------

=========  =======  =========  ==================================================================
offset     size     type       field
=========  =======  =========  ==================================================================
0          4        bytes      magic ``b"HBAC"``
4          1        uint8      version, 1
5          1        uint8      flags: bit 0 ``SPARSE`` (raw schemes only); other bits 0
6          1        uint8      dtype of the decoded tensor: 1 float32, 2 float16, 3 bfloat16
7          1        uint8      scheme: 0 raw, 1 quantized
8          1        uint8      raw: wire dtype (1, 2, 3 as for dtype); quantized: 0
9          1        uint8      quantized: bits (2, 4, 8); raw: 0
10         1        uint8      quantized: granularity (1 tensor, 2 channel, 3 group); raw: 0
11         1        uint8      quantized: rounding (1 nearest, 2 stochastic); raw: 0
12         1        uint8      entropy coder: 0 none, 1 zstd
13         1        uint8      ndim, 0..8
14         2        uint16     reserved, 0
16         4        uint32     quantized: group size (power of two >= 32); raw: 0
20         4        int32      quantized: channel dim, in [-8, 7] (and in range for channel
                               granularity); raw: 0
24         8        int64      quantized: stochastic-rounding seed; raw: 0
32         8        uint64     A = aux section bytes (uncompressed): quantized ``8*G`` (G float32
                               scales, then G float32 offsets); sparse ``ceil(numel/8)`` (the
                               mask); else 0
40         8        uint64     P = payload bytes (uncompressed): quantized ``ceil(numel*bits/8)``;
                               raw ``numel * wire itemsize``; sparse ``nnz * wire itemsize``
48         8        uint64     B = body bytes stored: ``A + P`` if the coder is none; else the
                               zstd frame's size (0 when ``A + P == 0``)
56         8n       int64[n]   shape (row-major; numel = product, 1 for ndim 0)
56+8n      B        bytes      body: aux then payload, or one zstd frame that declares its
                               content size ``A + P`` and decompresses to aux then payload
56+8n+B    4        uint32     CRC-32 of bytes ``[0, 56+8n+B)``
=========  =======  =========  ==================================================================

Sections. Scales, offsets and raw values are little-endian IEEE (bfloat16: the top 16 bits of a
float32). Quantized codes: element ``k`` of ``x.flatten()`` sits at bit ``(k*bits) % 8`` of payload
byte ``(k*bits) // 8``; decoding is ``x = offset[g] + code * scale[g]`` in float32 (group ``g`` of
element ``k`` per :mod:`hierbench.ops.quant`), then cast to dtype. Sparse mask: bit ``k % 8`` of
byte ``k // 8`` is 1 iff element ``k``'s bit pattern is non-zero (so ``-0.0`` is kept); the payload
holds those elements in order; all other elements are ``+0.0``. Unused high bits of the last
payload / mask byte are 0. A frame is exactly ``60 + 8n + B`` bytes: trailing bytes are an error.

CRC: CRC-32 as in zlib / zip / PNG (``zlib.crc32``, reflected polynomial 0xEDB88320, init and
final xor 0xFFFFFFFF), so any ``zlib`` checks a frame. The codec computes it with
:func:`hierbench.ops.crc32` (the same value; carry-less-multiply folding on x86-64: 57 GB/s on a
1 MiB frame here against ``zlib.crc32``'s 4.3, see ``benchmarks/bench_checksum.py``), or with
``zlib.crc32`` where the native extension is not built. It detects accidental
corruption (every burst up to 32 bits); it is not a MAC and does not authenticate the sender.

Sparsity (measured, not assumed)
--------------------------------
Measured on real post-ReLU activations: torchvision ResNet-18 (CIFAR stem, random weights,
train-mode BN) on 64 real CIFAR-10 images, cuts stem/layer1..layer4 holding 32-50 % zeros; zstd
level 1 after the transform; ratio = fp32 bytes / frame bytes; one thread, this 2-core machine.

* raw wires: sparse+zstd frames are **5-11 % smaller** than plain zstd (layer2: fp32 1.48 ->
  1.63, fp16 2.89 -> 3.19; stem, 50 % zeros: fp32 2.05 -> 2.16), and the gain grows with
  sparsity (13 % at 51 %, 16-22 % at 71 %, 19-23 % at 91 % zeros, thresholding the same
  activations). Encoding is as fast or faster (zstd sees fewer bytes: layer2 fp32 177 -> 315
  MB/s), decoding 0.6-1.2x plain zstd's speed (the scatter). Shipped, opt-in
  (``sparse=True``, ``"fp32+sparse+zstd1"``).
* quantized wires: a zero is already code 0 and zstd finds the runs, so the mask costs more than
  it saves: q8 +1 to +5 %, q4 -5 % (layer2/3), q2 -20 to -30 %. Not offered (``CodecConfig``
  rejects the combination).
* byte-shuffling fp32 before zstd (blosc-style): -2 to +4 % at a third to half the speed; not
  shipped.
"""

from __future__ import annotations

import functools
import math
import re
import struct
import sys
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import zstandard

from hierbench.errors import CodecError, ConfigError

if TYPE_CHECKING:
    from hierbench.ops.quant import QuantConfig

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "FRAME_MAGIC",
    "FRAME_VERSION",
    "MAX_NDIM",
    "WIRES",
    "ActivationCodec",
    "CodecConfig",
    "CodecStats",
    "FrameHeader",
    "decode",
    "encode",
    "read_header",
]

FRAME_MAGIC = b"HBAC"
FRAME_VERSION = 1
MAX_NDIM = 8
DEFAULT_MAX_FRAME_SIZE = 1 << 30

#: Wire names: ``raw`` keeps the input dtype; ``fp*``/``bf16`` cast; ``q*`` quantize.
WIRES = ("raw", "fp32", "fp16", "bf16", "q8", "q4", "q2")
ZSTD_MIN_LEVEL = -(1 << 17)  # zstd's fastest "negative" level (ZSTD_minCLevel)
ZSTD_MAX_LEVEL = zstandard.MAX_COMPRESSION_LEVEL  # 22

# Header: magic, version, flags, dtype, scheme, wire, bits, granularity, rounding, coder, ndim,
# reserved | group_size, channel_dim | seed | aux, payload, body lengths.
_HEADER = struct.Struct("<4s10BH Ii q 3Q")
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEADER.size  # 56, before the shape
assert HEADER_SIZE == 56

_FLAG_SPARSE = 0x01
_SCHEME_RAW, _SCHEME_QUANT = 0, 1
_CODER_NONE, _CODER_ZSTD = 0, 1
_CODER_NAMES = {_CODER_NONE: "none", _CODER_ZSTD: "zstd"}

_DTYPE_CODE = {torch.float32: 1, torch.float16: 2, torch.bfloat16: 3}
_CODE_DTYPE = {v: k for k, v in _DTYPE_CODE.items()}
_DTYPE_NAME = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
_NAME_DTYPE = {v: k for k, v in _DTYPE_NAME.items()}
_INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}

_GRAN_CODE = {"tensor": 1, "channel": 2, "group": 3}
_CODE_GRAN = {v: k for k, v in _GRAN_CODE.items()}
_ROUND_CODE = {"nearest": 1, "stochastic": 2}
_CODE_ROUND = {v: k for k, v in _ROUND_CODE.items()}

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_LITTLE_ENDIAN = sys.byteorder == "little"


def _check_host() -> None:
    if not _LITTLE_ENDIAN:  # pragma: no cover - every supported host is little-endian
        raise NotImplementedError("hierbench.codec needs a little-endian host")


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


_PARSE_RE = re.compile(r"^zstd(-?\d+)?$")


@dataclass(frozen=True)
class CodecConfig:
    """How :class:`ActivationCodec` encodes. Frozen; validated on construction.

    Attributes:
        wire: ``"raw"`` (values in the input's dtype), ``"fp32"`` / ``"fp16"`` / ``"bf16"``
            (values cast to that dtype; decoding casts back to the input's dtype), or ``"q8"`` /
            ``"q4"`` / ``"q2"`` (quantized; decodes to exactly ``dequantize(quantize(x))``).
        quant: for ``q*`` wires, the :class:`~hierbench.ops.QuantConfig` (its ``bits`` must
            match the wire); ``None`` means ``QuantConfig(bits=N)`` (per-group, 128, nearest).
            Must be ``None`` for the other wires.
        zstd_level: ``None`` for no entropy coder, else a zstd level (1..22, or negative for
            zstd's faster modes; 0 is rejected as ambiguous).
        sparse: raw wires only: store a bitmask of the non-zero elements and the non-zero values
            (pays on post-ReLU activations; see the module docstring for measurements).
        max_frame_size: bound, in bytes, on the frame, on its decompressed body and on the
            decoded tensor, enforced when encoding and when decoding.

    ``CodecConfig.parse("q4+zstd1")`` builds one from the CLI spelling.
    """

    wire: str = "raw"
    quant: QuantConfig | None = None
    zstd_level: int | None = None
    sparse: bool = False
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE

    def __post_init__(self) -> None:
        if self.wire not in WIRES:
            raise ConfigError(
                f"unknown codec wire {self.wire!r}; valid choices: {', '.join(WIRES)}"
            )
        if self.is_quantized:
            from hierbench.ops.quant import QuantConfig

            bits = int(self.wire[1:])
            if self.quant is None:
                object.__setattr__(self, "quant", QuantConfig(bits=bits))
            elif not isinstance(self.quant, QuantConfig):
                raise ConfigError(
                    f"CodecConfig.quant must be a QuantConfig, got {type(self.quant).__name__}"
                )
            elif self.quant.bits != bits:
                raise ConfigError(
                    f"CodecConfig.quant.bits is {self.quant.bits} but the wire is {self.wire!r}"
                )
            if not -MAX_NDIM <= self.quant.channel_dim < MAX_NDIM:
                raise ConfigError(
                    f"CodecConfig.quant.channel_dim must be in [-{MAX_NDIM}, {MAX_NDIM - 1}], "
                    f"got {self.quant.channel_dim}"
                )
            if self.sparse:
                raise ConfigError(
                    "sparse applies to raw wires only (on quantized activations the mask costs "
                    "more than it saves; see hierbench.codec's docstring)"
                )
        elif self.quant is not None:
            raise ConfigError(f"CodecConfig.quant is only for q8/q4/q2 wires, not {self.wire!r}")
        if self.zstd_level is not None and (
            type(self.zstd_level) is not int
            or not ZSTD_MIN_LEVEL <= self.zstd_level <= ZSTD_MAX_LEVEL
            or self.zstd_level == 0
        ):
            raise ConfigError(
                f"CodecConfig.zstd_level must be None or a non-zero int in "
                f"[{ZSTD_MIN_LEVEL}, {ZSTD_MAX_LEVEL}], got {self.zstd_level!r}"
            )
        if type(self.sparse) is not bool:
            raise ConfigError(f"CodecConfig.sparse must be a bool, got {self.sparse!r}")
        if type(self.max_frame_size) is not int or not 64 <= self.max_frame_size <= 1 << 62:
            raise ConfigError(
                f"CodecConfig.max_frame_size must be an int in [64, 2**62], "
                f"got {self.max_frame_size!r}"
            )

    @property
    def is_quantized(self) -> bool:
        return self.wire.startswith("q")

    @property
    def name(self) -> str:
        """The CLI spelling, e.g. ``"q4+zstd1"`` (it does not show a non-default QuantConfig)."""
        parts = [self.wire]
        if self.sparse:
            parts.append("sparse")
        if self.zstd_level is not None:
            parts.append(f"zstd{self.zstd_level}")
        return "+".join(parts)

    @classmethod
    def parse(cls, spec: str, **overrides) -> CodecConfig:
        """Parse ``<wire>[+sparse][+zstd[<level>]]``, e.g. ``"fp16"``, ``"q4+zstd1"``.

        ``wire`` is one of :data:`WIRES`; ``+zstd`` alone means level 1; ``+zstd-3`` is a fast
        negative level. Case and surrounding spaces are ignored. ``overrides`` are passed to the
        constructor (``quant=``, ``max_frame_size=``).

        Raises:
            ConfigError: an unknown wire or suffix (the message lists the valid choices), a
                repeated suffix, or an invalid level.
        """
        if not isinstance(spec, str):
            raise TypeError(f"codec spec must be a str, got {type(spec).__name__}")
        tokens = [t.strip() for t in spec.strip().lower().split("+")]
        wire, suffixes = tokens[0], tokens[1:]
        if wire not in WIRES:
            raise ConfigError(
                f"unknown codec {wire!r} in {spec!r}; valid choices: {', '.join(WIRES)}, "
                "optionally followed by +sparse (raw wires) and/or +zstd<level>"
            )
        kwargs: dict = {"wire": wire}
        for token in suffixes:
            match = _PARSE_RE.match(token)
            key = "zstd_level" if match else "sparse" if token == "sparse" else None
            if key is None:
                raise ConfigError(
                    f"unknown codec suffix {token!r} in {spec!r}; valid choices: +sparse, "
                    "+zstd, +zstd<level> (e.g. +zstd1, +zstd-3)"
                )
            if key in kwargs:
                raise ConfigError(f"codec suffix {token!r} repeated in {spec!r}")
            kwargs[key] = (int(match.group(1) or 1)) if match else True
        kwargs.update(overrides)
        return cls(**kwargs)


def _as_config(config: CodecConfig | str | None) -> CodecConfig:
    if config is None:
        return CodecConfig()
    if isinstance(config, str):
        return CodecConfig.parse(config)
    if not isinstance(config, CodecConfig):
        raise TypeError(f"config must be a CodecConfig or str, got {type(config).__name__}")
    return config


# ---------------------------------------------------------------------------------------------
# Header
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameHeader:
    """The decoded (and validated) header of a frame; see :func:`read_header`.

    ``wire`` is the payload's representation: ``"fp32"``/``"fp16"``/``"bf16"`` for raw frames,
    ``"q8"``/``"q4"``/``"q2"`` for quantized ones (then ``quant`` holds the config).
    """

    version: int
    dtype: torch.dtype
    shape: tuple[int, ...]
    wire: str
    quant: QuantConfig | None
    seed: int
    sparse: bool
    coder: str
    aux_bytes: int
    payload_bytes: int
    body_bytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def header_bytes(self) -> int:
        return HEADER_SIZE + 8 * len(self.shape)

    @property
    def frame_bytes(self) -> int:
        return self.header_bytes + self.body_bytes + _CRC.size

    @property
    def is_quantized(self) -> bool:
        return self.quant is not None


def _bad(field_name: str, problem: str) -> CodecError:
    return CodecError(f"invalid frame: {field_name}: {problem}")


def _num_groups(shape: tuple[int, ...], granularity: str, group_size: int, channel_dim: int):
    # Mirrors hierbench.ops.reference.num_groups (tested against it) without importing the
    # ops package, so raw frames decode without the native extension.
    if granularity == "tensor":
        return 1
    if granularity == "channel":
        return shape[channel_dim]
    return -(-math.prod(shape) // group_size)


def _parse(data, max_frame_size: int) -> tuple[FrameHeader, memoryview]:
    """Validate every header field and the CRC; return the header and the body's view."""
    _check_host()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"frame must be bytes, bytearray or memoryview, got {type(data).__name__}")
    mv = memoryview(data)
    if not mv.c_contiguous:
        raise TypeError("frame memoryview must be C-contiguous")
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    size = mv.nbytes
    if size > max_frame_size:
        raise _bad("length", f"{size} bytes exceeds max_frame_size {max_frame_size}")
    if size < HEADER_SIZE + _CRC.size:
        raise _bad(
            "length", f"truncated: {size} bytes, the smallest frame is {HEADER_SIZE + _CRC.size}"
        )
    (
        magic,
        version,
        flags,
        dtype_code,
        scheme,
        wire_code,
        bits,
        gran_code,
        round_code,
        coder,
        ndim,
        reserved,
        group_size,
        channel_dim,
        seed,
        aux_len,
        payload_len,
        body_len,
    ) = _HEADER.unpack_from(mv, 0)
    if magic != FRAME_MAGIC:
        raise _bad("magic", f"{magic!r}, expected {FRAME_MAGIC!r} (not a hierbench frame)")
    if version != FRAME_VERSION:
        raise _bad("version", f"{version} is not supported (this reader knows {FRAME_VERSION})")
    if ndim > MAX_NDIM:
        raise _bad("ndim", f"{ndim} exceeds the maximum {MAX_NDIM}")
    header_len = HEADER_SIZE + 8 * ndim
    if size < header_len + _CRC.size:
        raise _bad("length", f"truncated: {size} bytes, header and CRC need {header_len + 4}")
    if body_len > max_frame_size:
        raise _bad("body length", f"{body_len} exceeds max_frame_size {max_frame_size}")
    expected_size = header_len + body_len + _CRC.size
    if size < expected_size:
        raise _bad("length", f"truncated: {size} bytes, the header declares {expected_size}")
    if size > expected_size:
        raise _bad(
            "length", f"{size - expected_size} trailing bytes after the {expected_size}-byte frame"
        )
    (crc,) = _CRC.unpack_from(mv, header_len + body_len)
    actual = _crc32(mv[: header_len + body_len])
    if crc != actual:
        raise _bad("crc32", f"stored {crc:#010x}, computed {actual:#010x} (corrupted frame)")

    # The CRC matches: now the semantics, every field, before anything is allocated.
    if flags & ~_FLAG_SPARSE:
        raise _bad("flags", f"unknown bits set in {flags:#04x}")
    sparse = bool(flags & _FLAG_SPARSE)
    if reserved:
        raise _bad("reserved", f"{reserved}, expected 0")
    if dtype_code not in _CODE_DTYPE:
        raise _bad("dtype", f"unknown code {dtype_code} (1 float32, 2 float16, 3 bfloat16)")
    dtype = _CODE_DTYPE[dtype_code]
    if coder not in _CODER_NAMES:
        raise _bad("entropy coder", f"unknown code {coder} (0 none, 1 zstd)")
    shape = struct.unpack_from(f"<{ndim}q", mv, HEADER_SIZE)
    for i, d in enumerate(shape):
        if d < 0:
            raise _bad(f"shape[{i}]", f"{d} is negative")
    numel = math.prod(shape)
    # The shape's extent with its empty dims counted as 1 bounds what torch may compute
    # (strides), so e.g. (0, 2**62, 2**62) is rejected too.
    extent = math.prod(max(d, 1) for d in shape)
    if extent * dtype.itemsize > max_frame_size:
        raise _bad(
            "shape",
            f"{tuple(shape)} of {dtype} would need {extent * dtype.itemsize} bytes, over "
            f"max_frame_size {max_frame_size}",
        )

    quant = None
    if scheme == _SCHEME_RAW:
        if wire_code not in _CODE_DTYPE:
            raise _bad("wire dtype", f"unknown code {wire_code} (1 float32, 2 float16, 3 bfloat16)")
        for name, value in (
            ("bits", bits),
            ("granularity", gran_code),
            ("rounding", round_code),
            ("group size", group_size),
            ("channel dim", channel_dim),
            ("seed", seed),
        ):
            if value:
                raise _bad(name, f"{value}, expected 0 in a raw frame")
        wire_dtype = _CODE_DTYPE[wire_code]
        wire = _DTYPE_NAME[wire_dtype]
        item = wire_dtype.itemsize
        if sparse:
            if aux_len != -(-numel // 8):
                raise _bad(
                    "aux length", f"{aux_len}, the mask of {numel} elements is {-(-numel // 8)}"
                )
            if payload_len % item or payload_len > numel * item:
                raise _bad(
                    "payload length",
                    f"{payload_len} is not a multiple of {item} up to {numel * item} "
                    f"({numel} elements of {wire})",
                )
        else:
            if aux_len:
                raise _bad("aux length", f"{aux_len}, expected 0 in a raw frame")
            if payload_len != numel * item:
                raise _bad(
                    "payload length",
                    f"{payload_len}, expected {numel * item} ({numel} elements of {wire})",
                )
    elif scheme == _SCHEME_QUANT:
        if sparse:
            raise _bad("flags", "SPARSE is only valid in raw frames")
        if wire_code:
            raise _bad("wire dtype", f"{wire_code}, expected 0 in a quantized frame")
        if bits not in (2, 4, 8):
            raise _bad("bits", f"{bits}, expected 2, 4 or 8")
        if gran_code not in _CODE_GRAN:
            raise _bad("granularity", f"unknown code {gran_code} (1 tensor, 2 channel, 3 group)")
        if round_code not in _CODE_ROUND:
            raise _bad("rounding", f"unknown code {round_code} (1 nearest, 2 stochastic)")
        if group_size < 32 or group_size & (group_size - 1):
            raise _bad("group size", f"{group_size} is not a power of two >= 32")
        if not -MAX_NDIM <= channel_dim < MAX_NDIM:
            raise _bad("channel dim", f"{channel_dim} is outside [-{MAX_NDIM}, {MAX_NDIM - 1}]")
        granularity = _CODE_GRAN[gran_code]
        if granularity == "channel" and not -ndim <= channel_dim < ndim:
            raise _bad(
                "channel dim", f"{channel_dim} is out of range for a {ndim}-dimensional shape"
            )
        groups = _num_groups(shape, granularity, group_size, channel_dim)
        if aux_len != 8 * groups:
            raise _bad(
                "aux length",
                f"{aux_len}, expected {8 * groups} ({groups} float32 scales and offsets)",
            )
        if payload_len != -(-numel * bits // 8):
            raise _bad(
                "payload length",
                f"{payload_len}, expected {-(-numel * bits // 8)} ({numel} codes of {bits} bits)",
            )
        from hierbench.ops.quant import QuantConfig

        quant = QuantConfig(
            bits=bits,
            granularity=granularity,
            group_size=group_size,
            channel_dim=channel_dim,
            rounding=_CODE_ROUND[round_code],
        )
        wire = f"q{bits}"
    else:
        raise _bad("scheme", f"unknown code {scheme} (0 raw, 1 quantized)")

    content = aux_len + payload_len
    if content > max_frame_size:
        raise _bad("body", f"{content} uncompressed bytes exceed max_frame_size {max_frame_size}")
    if coder == _CODER_NONE and body_len != content:
        raise _bad("body length", f"{body_len}, expected aux + payload = {content}")
    if coder == _CODER_ZSTD and (content == 0) != (body_len == 0):
        raise _bad("body length", f"{body_len} for {content} uncompressed bytes")
    header = FrameHeader(
        version=version,
        dtype=dtype,
        shape=tuple(shape),
        wire=wire,
        quant=quant,
        seed=seed,
        sparse=sparse,
        coder=_CODER_NAMES[coder],
        aux_bytes=aux_len,
        payload_bytes=payload_len,
        body_bytes=body_len,
    )
    return header, mv[header_len : header_len + body_len]


def read_header(frame, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> FrameHeader:
    """Validate a frame's header, lengths and CRC (not its body) and return the header.

    Raises:
        CodecError: the frame is malformed, truncated, corrupted or over ``max_frame_size``.
    """
    return _parse(frame, max_frame_size)[0]


# ---------------------------------------------------------------------------------------------
# Codec
# ---------------------------------------------------------------------------------------------


@dataclass
class CodecStats:
    """Counters of one :class:`ActivationCodec` (reset with :meth:`ActivationCodec.reset_stats`).

    ``*_tensor_bytes`` count ``numel * itemsize`` of the tensors given to ``encode`` or returned
    by ``decode``; ``*_frame_bytes`` the frames' sizes.
    """

    encoded_frames: int = 0
    encoded_tensor_bytes: int = 0
    encoded_frame_bytes: int = 0
    decoded_frames: int = 0
    decoded_tensor_bytes: int = 0
    decoded_frame_bytes: int = 0
    last_frame_bytes: int = 0
    last_tensor_bytes: int = 0

    @property
    def compression_ratio(self) -> float:
        """Tensor bytes over frame bytes, over every encode so far (nan before the first)."""
        if not self.encoded_frame_bytes:
            return math.nan
        return self.encoded_tensor_bytes / self.encoded_frame_bytes

    @property
    def last_ratio(self) -> float:
        """Tensor bytes over frame bytes of the last frame encoded."""
        return self.last_tensor_bytes / self.last_frame_bytes if self.last_frame_bytes else math.nan


def _crc32(data, value: int = 0) -> int:
    return _crc32_function()(data, value)


@functools.cache
def _crc32_function():
    # hierbench.ops.crc32 where the native extension is built; zlib.crc32 (the same value,
    # slower: benchmarks/bench_checksum.py) where it is not: raw frames need no build (like
    # quantize, ops is imported only when first needed).
    try:
        from hierbench.ops.checksum import crc32
    except ImportError:  # ExtensionNotBuiltError is one
        return zlib.crc32
    return crc32


def _zstd_bound(n: int) -> int:
    # ZSTD_COMPRESSBOUND from zstd.h, plus room for the frame header.
    return n + (n >> 8) + (((128 << 10) - n) >> 11 if n < (128 << 10) else 0) + 32


def _le_buffer(t: torch.Tensor) -> np.ndarray:
    """A zero-copy uint8 view of a contiguous CPU tensor (bytes in native = little order)."""
    return t.reshape(-1).view(torch.uint8).numpy()


@dataclass
class _Encoded:
    header: bytes
    pieces: list = field(default_factory=list)  # buffers, concatenated they are the body
    body_len: int = 0
    tensor_bytes: int = 0

    @property
    def frame_len(self) -> int:
        return len(self.header) + self.body_len + _CRC.size


class ActivationCodec:
    """Encodes tensors into frames and decodes frames, reusing its zstd contexts.

    Not thread-safe: use one codec per thread (its zstd contexts and counters are shared
    state). Any codec decodes any valid frame (frames are self-describing); the codec's
    ``max_frame_size`` bounds what it accepts.

    Args:
        config: a :class:`CodecConfig`, a spec string for :meth:`CodecConfig.parse`
            (``"q4+zstd1"``), or ``None`` for raw values without compression.
    """

    def __init__(self, config: CodecConfig | str | None = None) -> None:
        self._config = _as_config(config)
        level = self._config.zstd_level
        self._cctx = zstandard.ZstdCompressor(level=level) if level is not None else None
        self._dctx = zstandard.ZstdDecompressor()
        self.stats = CodecStats()

    def __repr__(self) -> str:
        return f"ActivationCodec({self._config.name!r})"

    @property
    def config(self) -> CodecConfig:
        return self._config

    @property
    def max_frame_size(self) -> int:
        return self._config.max_frame_size

    def reset_stats(self) -> None:
        self.stats = CodecStats()

    # -- encoding ---------------------------------------------------------------------------

    def encode(self, x: torch.Tensor, *, seed: int = 0) -> bytes:
        """Encode ``x`` into one frame.

        Args:
            x: float32, float16 or bfloat16 tensor of any shape (up to 8 dims; 0-d and empty
                included), layout (non-contiguous, channels_last: encoded in row-major order)
                and device (CUDA tensors are cast / quantized on the device, then copied).
            seed: the stochastic-rounding seed (int64) for quantized wires; recorded in the
                frame. Give a fresh one per step when ``rounding="stochastic"``.

        Returns:
            The frame, ``bytes``; ``decode(frame)`` gives back ``x`` (raw wire), ``x`` cast to
            the wire dtype and back (fp32/fp16/bf16 wires), or ``dequantize(quantize(x))``.

        Raises:
            TypeError: ``x`` is not a float32/float16/bfloat16 tensor.
            CodecError: ``x`` cannot be encoded: more than 8 dims, over ``max_frame_size``,
                or non-finite values on a quantized wire.
        """
        enc = self._encode(x, seed)
        crc = _crc32(enc.header)
        for piece in enc.pieces:
            crc = _crc32(piece, crc)
        frame = b"".join([enc.header, *enc.pieces, _CRC.pack(crc)])
        self._count_encoded(enc)
        return frame

    def encode_into(self, x: torch.Tensor, buffer, *, seed: int = 0) -> int:
        """Encode ``x`` into the start of a writable ``buffer``; return the frame's length.

        Same frame as :meth:`encode`, written without building an intermediate ``bytes``
        (for raw wires without zstd, the tensor's bytes are copied once, straight into
        ``buffer``). :meth:`frame_bound` gives a buffer size that is always enough.

        Raises:
            ValueError: ``buffer`` is smaller than the frame (nothing useful is written).
            TypeError, CodecError: as :meth:`encode`.
        """
        out = memoryview(buffer)
        if out.readonly:
            raise TypeError("buffer must be writable")
        out = out.cast("B") if out.format != "B" or out.ndim != 1 else out
        enc = self._encode(x, seed)
        n = enc.frame_len
        if out.nbytes < n:
            raise ValueError(f"buffer holds {out.nbytes} bytes, the frame needs {n}")
        pos = len(enc.header)
        out[:pos] = enc.header
        crc = _crc32(enc.header)
        for piece in enc.pieces:
            m = memoryview(piece).cast("B")
            out[pos : pos + m.nbytes] = m
            crc = _crc32(m, crc)
            pos += m.nbytes
        _CRC.pack_into(out, pos, crc)
        self._count_encoded(enc)
        return n

    def frame_bound(self, x: torch.Tensor) -> int:
        """An upper bound on the size of ``encode(x)``'s frame (to size an encode_into buffer)."""
        numel = x.numel()
        cfg = self._config
        if cfg.is_quantized:
            groups = cfg.quant.num_groups(tuple(x.shape))
            body = -(-numel * cfg.quant.bits // 8) + 8 * groups
        else:
            item = (x.dtype if cfg.wire == "raw" else _NAME_DTYPE[cfg.wire]).itemsize
            body = numel * item + (-(-numel // 8) if cfg.sparse else 0)
        if cfg.zstd_level is not None:
            body = _zstd_bound(body)
        return HEADER_SIZE + 8 * x.dim() + body + _CRC.size

    def _count_encoded(self, enc: _Encoded) -> None:
        s = self.stats
        s.encoded_frames += 1
        s.encoded_tensor_bytes += enc.tensor_bytes
        s.encoded_frame_bytes += enc.frame_len
        s.last_frame_bytes = enc.frame_len
        s.last_tensor_bytes = enc.tensor_bytes

    def _encode(self, x: torch.Tensor, seed: int) -> _Encoded:
        _check_host()
        cfg = self._config
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in _DTYPE_CODE:
            raise TypeError(f"x must be float32, float16 or bfloat16, got {x.dtype}")
        if type(seed) is not int or not _INT64_MIN <= seed <= _INT64_MAX:
            raise ValueError(f"seed must be an int64, got {seed!r}")
        if x.dim() > MAX_NDIM:
            raise CodecError(f"cannot encode a {x.dim()}-dimensional tensor (at most {MAX_NDIM})")
        shape = tuple(x.shape)
        numel = x.numel()
        tensor_bytes = numel * x.element_size()
        limit = cfg.max_frame_size
        extent = math.prod(max(d, 1) for d in shape)
        if extent * x.element_size() > limit:
            raise CodecError(
                f"cannot encode a tensor of shape {shape} ({tensor_bytes} bytes of {x.dtype}): "
                f"over max_frame_size {limit}"
            )
        x = x.detach()
        flags = 0
        if cfg.is_quantized:
            pieces, aux_len, payload_len, fields = self._quantize(x, seed)
        else:
            wire_dtype = x.dtype if cfg.wire == "raw" else _NAME_DTYPE[cfg.wire]
            t = x.to(wire_dtype).contiguous().cpu()
            item = wire_dtype.itemsize
            if cfg.sparse:
                flags |= _FLAG_SPARSE
                a = t.reshape(-1).view(_INT_VIEW[wire_dtype]).numpy()
                nonzero = a != 0  # on the bit pattern: -0.0 is kept
                mask = np.packbits(nonzero, bitorder="little")
                values = a[nonzero]
                pieces = [mask, values.view(np.uint8)]
                aux_len, payload_len = mask.nbytes, values.nbytes
            else:
                pieces = [_le_buffer(t)]
                aux_len, payload_len = 0, numel * item
            fields = (_SCHEME_RAW, _DTYPE_CODE[wire_dtype], 0, 0, 0, 0, 0, 0)
        content = aux_len + payload_len
        if content > limit:
            raise CodecError(
                f"cannot encode: the body would be {content} bytes, over max_frame_size {limit}"
            )
        coder = _CODER_NONE
        if self._cctx is not None:
            coder = _CODER_ZSTD
            if content == 0:
                pieces = []
            else:
                src = pieces[0] if len(pieces) == 1 else b"".join(pieces)
                pieces = [self._cctx.compress(src)]
        body_len = sum(memoryview(p).nbytes for p in pieces)
        scheme, wire_code, bits, gran, rnd, group_size, channel_dim, seed_field = fields
        header = _HEADER.pack(
            FRAME_MAGIC,
            FRAME_VERSION,
            flags,
            _DTYPE_CODE[x.dtype],
            scheme,
            wire_code,
            bits,
            gran,
            rnd,
            coder,
            len(shape),
            0,
            group_size,
            channel_dim,
            seed_field,
            aux_len,
            payload_len,
            body_len,
        ) + struct.pack(f"<{len(shape)}q", *shape)
        enc = _Encoded(header, pieces, body_len, tensor_bytes)
        if enc.frame_len > limit:
            raise CodecError(
                f"cannot encode: the frame would be {enc.frame_len} bytes, over max_frame_size "
                f"{limit}"
            )
        return enc

    def _quantize(self, x: torch.Tensor, seed: int):
        from hierbench.ops.quant import quantize

        qc = self._config.quant
        if qc.granularity == "channel" and not -x.dim() <= qc.channel_dim < x.dim():
            raise CodecError(
                f"cannot quantize per channel along dim {qc.channel_dim} of a "
                f"{x.dim()}-dimensional tensor"
            )
        try:
            q = quantize(x, qc, seed=seed)
        except ValueError as exc:  # non-finite input, or a range overflowing float32
            raise CodecError(f"cannot encode: {exc}") from exc
        scale = q.scale.cpu()
        offset = q.offset.cpu()
        payload = q.payload.cpu()
        groups = _num_groups(tuple(x.shape), qc.granularity, qc.group_size, qc.channel_dim)
        if scale.numel() != groups or payload.numel() != -(-x.numel() * qc.bits // 8):
            raise RuntimeError(  # an internal inconsistency between ops and codec, not input
                f"quantize returned {scale.numel()} groups / {payload.numel()} payload bytes, "
                f"the codec expects {groups} / {-(-x.numel() * qc.bits // 8)}"
            )
        pieces = [_le_buffer(scale), _le_buffer(offset), _le_buffer(payload)]
        fields = (
            _SCHEME_QUANT,
            0,
            qc.bits,
            _GRAN_CODE[qc.granularity],
            _ROUND_CODE[qc.rounding],
            qc.group_size,
            qc.channel_dim,
            seed,
        )
        return pieces, 8 * groups, payload.numel(), fields

    # -- decoding ---------------------------------------------------------------------------

    def decode(self, data, *, device: str | torch.device = "cpu") -> torch.Tensor:
        """Decode one frame into a new tensor of the frame's shape and dtype on ``device``.

        Every field is validated before anything is allocated (see the module docstring).
        Quantized frames are dequantized on ``device`` (so only the packed codes travel to a
        GPU).

        Args:
            data: the frame (``bytes``, ``bytearray`` or a C-contiguous ``memoryview``),
                exactly one frame long.
            device: where the result goes.

        Raises:
            CodecError: the frame is malformed, truncated, corrupted, over ``max_frame_size``
                or otherwise not a frame this encoder could have produced.
            TypeError: ``data`` is not a bytes-like object.
        """
        header, body = _parse(data, self._config.max_frame_size)
        content = header.aux_bytes + header.payload_bytes
        if header.coder == "zstd" and content:
            body = memoryview(self._decompress(body, content))
        aux = body[: header.aux_bytes]
        payload = body[header.aux_bytes : content]
        if header.is_quantized:
            out = self._dequantize(header, aux, payload, device)
        else:
            out = _decode_raw(header, aux, payload).to(device)
        s = self.stats
        s.decoded_frames += 1
        s.decoded_frame_bytes += header.frame_bytes
        s.decoded_tensor_bytes += out.numel() * out.element_size()
        return out

    def _decompress(self, body: memoryview, content: int) -> bytes:
        if body[:4] != zstandard.FRAME_HEADER:
            raise _bad("body", "the coder is zstd but the body is not a zstd frame")
        try:
            declared = zstandard.frame_content_size(body)
        except zstandard.ZstdError as exc:
            raise _bad("body", f"bad zstd frame header ({exc})") from exc
        if declared != content:
            what = "does not declare its size" if declared < 0 else f"declares {declared} bytes"
            raise _bad("body", f"the zstd frame {what}, the header says {content}")
        try:
            out = self._dctx.decompress(body, max_output_size=content, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            raise _bad("body", f"zstd: {exc}") from exc
        if len(out) != content:  # pragma: no cover - zstd enforces the declared size
            raise _bad("body", f"zstd gave {len(out)} bytes, expected {content}")
        return out

    def _dequantize(self, header: FrameHeader, aux, payload, device) -> torch.Tensor:
        from hierbench.ops.quant import QuantizedTensor, dequantize

        groups = header.aux_bytes // 8
        params = _tensor_from(aux, torch.float32, 2 * groups)
        scale, offset = params[:groups], params[groups:]
        if groups and not bool(torch.isfinite(params).all()):
            raise _bad("scales", "a scale or offset is NaN or infinite")
        if groups and bool((scale < 0).any()):
            raise _bad("scales", "a scale is negative")
        codes = _tensor_from(payload, torch.uint8, header.payload_bytes)
        _check_padding(codes, header.numel * header.quant.bits, "payload")
        q = QuantizedTensor(
            payload=codes.to(device),
            scale=scale.to(device),
            offset=offset.to(device),
            shape=header.shape,
            dtype=header.dtype,
            config=header.quant,
            seed=header.seed,
        )
        return dequantize(q)


def _tensor_from(buf, dtype: torch.dtype, count: int) -> torch.Tensor:
    """A new (writable, owned) tensor holding the little-endian ``buf``: one copy."""
    out = torch.empty(count, dtype=dtype)
    if count:
        np.copyto(_le_buffer(out), np.frombuffer(buf, dtype=np.uint8))
    return out


def _check_padding(codes: torch.Tensor, nbits: int, what: str) -> None:
    used = nbits % 8
    if used and int(codes[-1]) >> used:
        raise _bad(what, "unused high bits of the last byte are not 0")


def _decode_raw(header: FrameHeader, aux, payload) -> torch.Tensor:
    wire_dtype = _NAME_DTYPE[header.wire]
    numel = header.numel
    if header.sparse:
        mask = np.frombuffer(aux, dtype=np.uint8)
        if numel % 8 and int(mask[-1]) >> (numel % 8):
            raise _bad("sparse mask", "unused high bits of the last byte are not 0")
        nonzero = np.unpackbits(mask, count=numel, bitorder="little").view(bool)
        item = wire_dtype.itemsize
        nnz = int(np.count_nonzero(nonzero))
        if nnz * item != header.payload_bytes:
            raise _bad(
                "payload length",
                f"{header.payload_bytes} bytes, the mask marks {nnz} values of {item} bytes",
            )
        out = torch.zeros(numel, dtype=wire_dtype)
        ints = out.view(_INT_VIEW[wire_dtype]).numpy()
        values = np.frombuffer(payload, dtype=ints.dtype)
        if nnz and not values.all():
            raise _bad("payload", "a value the mask marks as non-zero is zero")
        ints[nonzero] = values
    else:
        out = _tensor_from(payload, wire_dtype, numel)
    out = out.view(header.shape)
    return out if wire_dtype == header.dtype else out.to(header.dtype)


# ---------------------------------------------------------------------------------------------
# One-shot API
# ---------------------------------------------------------------------------------------------


def encode(x: torch.Tensor, config: CodecConfig | str | None = None, *, seed: int = 0) -> bytes:
    """One-shot: ``ActivationCodec(config).encode(x, seed=seed)``. In a loop, reuse a codec."""
    return ActivationCodec(config).encode(x, seed=seed)


def decode(
    frame,
    *,
    device: str | torch.device = "cpu",
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
) -> torch.Tensor:
    """One-shot: decode a frame of any scheme (frames are self-describing).

    Equivalent to ``ActivationCodec(CodecConfig(max_frame_size=...)).decode(frame)``.
    """
    return ActivationCodec(CodecConfig(max_frame_size=max_frame_size)).decode(frame, device=device)
