"""The frame: its header layout, the field codes, :class:`FrameHeader`, the decoder's validation
of every field (:func:`read_header`) and the CRC-32 that ends a frame.

The layout byte by byte and the sections of the body: docs/frame-format.md.

Decoding trusts nothing. Every header field is checked (magic, version, known enum values,
``ndim <= 8``, dims >= 0, sizes bounded by ``max_frame_size`` and consistent with each other and
with the frame length, canonical zero padding), then the CRC, then the zstd frame's declared
content size, all **before** anything proportional to a declared size is allocated; any failure
raises :class:`hierbench.errors.CodecError` naming the field. Nothing is pickled or evaluated.
``max_frame_size`` (default 1 GiB) bounds every buffer the decoder allocates: the frame, the
decompressed body and the decoded tensor (the encoder enforces the same bounds, so whatever it
produces decodes under the same setting).
"""

from __future__ import annotations

import functools
import math
import struct
import sys
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from hierbench.errors import CodecError

if TYPE_CHECKING:
    from hierbench.ops.quant import QuantConfig

FRAME_MAGIC = b"HBAC"
FRAME_VERSION = 2  # what the encoder writes
FRAME_VERSIONS = (1, 2)  # what the decoder reads (docs/frame-format.md, "Versions")
MAX_NDIM = 8
DEFAULT_MAX_FRAME_SIZE = 1 << 30

# Header: magic, version, flags, dtype, scheme, wire, bits, granularity, rounding, coder, ndim,
# reserved | group_size, channel_dim | seed | aux, payload, body lengths.
_HEADER = struct.Struct("<4s10BH Ii q 3Q")
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEADER.size  # 56, before the shape
assert HEADER_SIZE == 56

_FLAG_SPARSE = 0x01
_SCHEME_RAW, _SCHEME_QUANT = 0, 1
_CODER_NONE, _CODER_ZSTD, _CODER_LZ4 = 0, 1, 2
_CODER_NAMES = {_CODER_NONE: "none", _CODER_ZSTD: "zstd", _CODER_LZ4: "lz4"}

_DTYPE_CODE = {torch.float32: 1, torch.float16: 2, torch.bfloat16: 3}
_CODE_DTYPE = {v: k for k, v in _DTYPE_CODE.items()}
_DTYPE_NAME = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
_NAME_DTYPE = {v: k for k, v in _DTYPE_NAME.items()}

_GRAN_CODE = {"tensor": 1, "channel": 2, "group": 3}
_CODE_GRAN = {v: k for k, v in _GRAN_CODE.items()}
_ROUND_CODE = {"nearest": 1, "stochastic": 2}
_CODE_ROUND = {v: k for k, v in _ROUND_CODE.items()}

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_LITTLE_ENDIAN = sys.byteorder == "little"


def _check_host() -> None:
    if not _LITTLE_ENDIAN:  # pragma: no cover - every supported host is little-endian
        raise NotImplementedError("hierbench.codec needs a little-endian host")


def _pack_header(
    flags: int,
    dtype: torch.dtype,
    fields: tuple[int, ...],
    coder: int,
    shape: tuple[int, ...],
    aux_len: int,
    payload_len: int,
    body_len: int,
) -> bytes:
    """The header and shape of a frame; ``fields`` is (scheme, wire, bits, granularity,
    rounding, group size, channel dim, seed) as stored (see :func:`quant_fields`)."""
    scheme, wire_code, bits, gran, rnd, group_size, channel_dim, seed_field = fields
    return _HEADER.pack(
        FRAME_MAGIC,
        FRAME_VERSION,
        flags,
        _DTYPE_CODE[dtype],
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


def quant_fields(config: QuantConfig, ndim: int, seed: int) -> tuple[int, int, int]:
    """(group size, channel dim, seed) as a version-2 frame stores them: each only where the
    config uses it (group size for ``"group"``, the channel dim normalised to ``[0, ndim)`` for
    ``"channel"``, the seed for ``"stochastic"``), else 0."""
    group_size = config.group_size if config.granularity == "group" else 0
    channel_dim = config.channel_dim % ndim if config.granularity == "channel" else 0
    return group_size, channel_dim, seed if config.rounding == "stochastic" else 0


@dataclass(frozen=True)
class FrameHeader:
    """The decoded (and validated) header of a frame; see :func:`read_header`.

    ``wire`` is the payload's representation: ``"fp32"``/``"fp16"``/``"bf16"`` for raw frames,
    ``"q8"``/``"q4"``/``"q2"`` for quantized ones (then ``quant`` holds the config).

    In a version-2 frame a field the config does not use is stored as 0, so ``quant`` holds
    :class:`~hierbench.ops.QuantConfig`'s defaults there (group size 128 unless the granularity
    is ``"group"``, channel dim 1 unless it is ``"channel"``, where it is normalised to
    ``[0, ndim)``), and ``seed`` is 0 unless the rounding is stochastic. A version-1 frame's
    fields are given as stored.
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
    if version not in FRAME_VERSIONS:
        known = ", ".join(map(str, FRAME_VERSIONS))
        raise _bad("version", f"{version} is not supported (this reader knows {known})")
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
        raise _bad("entropy coder", f"unknown code {coder} (0 none, 1 zstd, 2 lz4)")
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
        granularity = _CODE_GRAN[gran_code]
        rounding = _CODE_ROUND[round_code]
        if version == 1:
            _check_v1_quant_fields(granularity, group_size, channel_dim, ndim)
        else:
            _check_v2_quant_fields(granularity, rounding, group_size, channel_dim, seed, ndim)
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
            group_size=group_size or 128,  # version 2: 0 where unused
            channel_dim=channel_dim if version == 1 or granularity == "channel" else 1,
            rounding=rounding,
        )
        wire = f"q{bits}"
    else:
        raise _bad("scheme", f"unknown code {scheme} (0 raw, 1 quantized)")

    content = aux_len + payload_len
    if content > max_frame_size:
        raise _bad("body", f"{content} uncompressed bytes exceed max_frame_size {max_frame_size}")
    if coder == _CODER_NONE and body_len != content:
        raise _bad("body length", f"{body_len}, expected aux + payload = {content}")
    if coder != _CODER_NONE and (content == 0) != (body_len == 0):
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


def _check_v1_quant_fields(granularity: str, group_size: int, channel_dim: int, ndim: int):
    # Version 1 stores the whole QuantConfig, used or not.
    if group_size < 32 or group_size & (group_size - 1):
        raise _bad("group size", f"{group_size} is not a power of two >= 32")
    if not -MAX_NDIM <= channel_dim < MAX_NDIM:
        raise _bad("channel dim", f"{channel_dim} is outside [-{MAX_NDIM}, {MAX_NDIM - 1}]")
    if granularity == "channel" and not -ndim <= channel_dim < ndim:
        raise _bad("channel dim", f"{channel_dim} is out of range for a {ndim}-dimensional shape")


def _check_v2_quant_fields(
    granularity: str, rounding: str, group_size: int, channel_dim: int, seed: int, ndim: int
):
    # Version 2 stores a field only where it is used, and the channel dim normalised.
    if granularity == "group":
        if group_size < 32 or group_size & (group_size - 1):
            raise _bad("group size", f"{group_size} is not a power of two >= 32")
    elif group_size:
        raise _bad("group size", f"{group_size}, expected 0 for {granularity} granularity")
    if granularity == "channel":
        if not 0 <= channel_dim < ndim:
            raise _bad(
                "channel dim", f"{channel_dim} is not in [0, {ndim}) for a {ndim}-dimensional shape"
            )
    elif channel_dim:
        raise _bad("channel dim", f"{channel_dim}, expected 0 for {granularity} granularity")
    if rounding == "nearest" and seed:
        raise _bad("seed", f"{seed}, expected 0 with nearest rounding")


def read_header(frame, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> FrameHeader:
    """Validate a frame's header, lengths and CRC (not its body) and return the header.

    Raises:
        CodecError: the frame is malformed, truncated, corrupted or over ``max_frame_size``.
    """
    return _parse(frame, max_frame_size)[0]


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
