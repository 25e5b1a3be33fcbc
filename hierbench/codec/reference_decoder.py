"""A torch-free reference decoder of activation frames: numpy, zstandard and the standard library.

It implements docs/frame-format.md on its own (it shares no code with
:class:`hierbench.codec.ActivationCodec`, and imports neither torch nor the native extension), so
that a receiver without PyTorch can read frames and so that the spec has a second, independent
implementation: the tests hold ``ActivationCodec.decode`` and this module to the same bits on every
configuration, and to the same verdict (valid or not) on fuzzed frames.

Usage::

    from hierbench.codec import reference_decoder as ref

    x = ref.decode(frame)              # numpy float32 / float16 (bfloat16 widened to float32)
    d = ref.decode_bits(frame)         # d.bits: the IEEE bit patterns (uint32 / uint16), d.dtype
    h = ref.read_header(frame)         # the validated header, nothing decoded

bfloat16 has no numpy dtype: :func:`decode` widens it to float32 (exactly); ``decode_bits`` gives
its 16-bit patterns. Every malformed, truncated, corrupted or oversized frame raises
:class:`hierbench.errors.CodecError` (a ``ValueError``) naming the field; nothing larger than
``max_frame_size`` bytes is allocated.

Speed is not a goal (one readable numpy pass per step); the codec is the fast decoder.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import zstandard

from hierbench.errors import CodecError

__all__ = ["Decoded", "Header", "decode", "decode_bits", "read_header"]

MAGIC = b"HBAC"
VERSIONS = (1, 2)
MAX_NDIM = 8
DEFAULT_MAX_FRAME_SIZE = 1 << 30
_HEAD = struct.Struct("<4s10BH Ii q 3Q")  # 56 bytes: docs/frame-format.md, "Header"

# dtype codes -> (name, item size, unsigned integer type of its bit patterns)
_DTYPES = {
    1: ("float32", 4, np.uint32),
    2: ("float16", 2, np.uint16),
    3: ("bfloat16", 2, np.uint16),
}
_WIRE_NAMES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
_GRANULARITIES = {1: "tensor", 2: "channel", 3: "group"}
_ROUNDINGS = {1: "nearest", 2: "stochastic"}
_CODERS = {0: "none", 1: "zstd", 2: "lz4"}  # lz4: docs/frame-format-lz4.md (optional package)
_CANONICAL_NAN = {"float32": 0x7FC00000, "float16": 0x7E00, "bfloat16": 0x7FC0}


@dataclass(frozen=True)
class Header:
    """A validated frame header. Fields a frame does not use are 0 / ``None`` as stored."""

    version: int
    dtype: str  # of the decoded tensor: "float32", "float16" or "bfloat16"
    shape: tuple[int, ...]
    scheme: str  # "raw" or "quantized"
    wire: str  # raw: "fp32" / "fp16" / "bf16"; quantized: "q8" / "q4" / "q2"
    sparse: bool
    bits: int  # quantized: 2, 4, 8; raw: 0
    granularity: str | None  # quantized: "tensor", "channel", "group"
    group_size: int  # as stored
    channel_dim: int  # as stored (version 1 may hold a negative one)
    rounding: str | None  # quantized: "nearest", "stochastic"
    seed: int
    coder: str  # "none", "zstd" or "lz4"
    aux_bytes: int
    payload_bytes: int
    body_bytes: int
    header_bytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def groups(self) -> int:
        """G: the number of (scale, offset) pairs of a quantized frame."""
        return _num_groups(self.shape, self.granularity, self.group_size, self.channel_dim)


@dataclass(frozen=True)
class Decoded:
    """A decoded frame: the header and the tensor as IEEE bit patterns of ``header.dtype``."""

    header: Header
    bits: np.ndarray  # uint32 (float32) or uint16 (float16, bfloat16), of header.shape

    @property
    def dtype(self) -> str:
        return self.header.dtype

    def to_numpy(self) -> np.ndarray:
        """float32 or float16 values; bfloat16 widened to float32 (exactly)."""
        if self.dtype == "float32":
            return self.bits.view(np.float32)
        if self.dtype == "float16":
            return self.bits.view(np.float16)
        return (self.bits.astype(np.uint32) << 16).view(np.float32)


def _bad(field: str, problem: str) -> CodecError:
    return CodecError(f"invalid frame: {field}: {problem}")


def _num_groups(shape, granularity, group_size, channel_dim) -> int:
    if granularity == "tensor":
        return 1
    if granularity == "channel":
        return shape[channel_dim % len(shape)]
    if granularity == "group":
        return -(-math.prod(shape) // group_size)
    return 0


def _pow2_ge32(n: int) -> bool:
    return n >= 32 and n & (n - 1) == 0


def _view(frame) -> memoryview:
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise TypeError(f"frame must be bytes, bytearray or memoryview, got {type(frame).__name__}")
    mv = memoryview(frame)
    if not mv.c_contiguous:
        raise TypeError("frame memoryview must be C-contiguous")
    return mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv


def _parse(frame, max_frame_size: int) -> tuple[Header, memoryview]:
    """Every check of docs/frame-format.md ("Validation") on the header, lengths and CRC."""
    mv = _view(frame)
    size = mv.nbytes
    if size > max_frame_size:
        raise _bad("length", f"{size} bytes exceeds max_frame_size {max_frame_size}")
    if size < _HEAD.size + 4:
        raise _bad("length", f"truncated: {size} bytes")
    fields = _HEAD.unpack_from(mv, 0)
    magic, version, flags, dtype_code, scheme, wire_code, bits, gran, rnd, coder = fields[:10]
    ndim, reserved, group_size, channel_dim, seed, aux, payload, body = fields[10:]
    if magic != MAGIC:
        raise _bad("magic", f"{magic!r}, expected {MAGIC!r}")
    if version not in VERSIONS:
        raise _bad("version", f"{version} is not supported (this reader knows 1, 2)")
    if ndim > MAX_NDIM:
        raise _bad("ndim", f"{ndim} exceeds {MAX_NDIM}")
    header_len = _HEAD.size + 8 * ndim
    if body > max_frame_size:
        raise _bad("body length", f"{body} exceeds max_frame_size {max_frame_size}")
    if size < header_len + 4 or size != header_len + body + 4:
        raise _bad("length", f"{size} bytes, the header declares {header_len + body + 4}")
    stored_crc = struct.unpack_from("<I", mv, header_len + body)[0]
    if zlib.crc32(mv[: header_len + body]) != stored_crc:
        raise _bad("crc32", "mismatch (corrupted frame)")

    if flags & ~1:
        raise _bad("flags", f"unknown bits set in {flags:#04x}")
    if reserved:
        raise _bad("reserved", f"{reserved}, expected 0")
    if dtype_code not in _DTYPES:
        raise _bad("dtype", f"unknown code {dtype_code}")
    if coder not in _CODERS:
        raise _bad("entropy coder", f"unknown code {coder}")
    dtype, item, _ = _DTYPES[dtype_code]
    shape = struct.unpack_from(f"<{ndim}q", mv, _HEAD.size)
    if any(d < 0 for d in shape):
        raise _bad("shape", f"{shape} has a negative size")
    numel = math.prod(shape)
    if math.prod(max(d, 1) for d in shape) * item > max_frame_size:
        raise _bad("shape", f"{shape} of {dtype} exceeds max_frame_size {max_frame_size}")
    sparse = bool(flags & 1)

    if scheme == 0:  # raw
        if wire_code not in _DTYPES:
            raise _bad("wire dtype", f"unknown code {wire_code}")
        if bits or gran or rnd or group_size or channel_dim or seed:
            raise _bad("quantization fields", "expected 0 in a raw frame")
        wire_item = _DTYPES[wire_code][1]
        if sparse:
            if aux != -(-numel // 8):
                raise _bad("aux length", f"{aux}, the mask of {numel} elements is {-(-numel // 8)}")
            if payload % wire_item or payload > numel * wire_item:
                raise _bad("payload length", f"{payload}")
        elif aux or payload != numel * wire_item:
            raise _bad("aux / payload length", f"{aux} / {payload}")
        wire = _WIRE_NAMES[_DTYPES[wire_code][0]]
        granularity = rounding = None
    elif scheme == 1:  # quantized
        if sparse:
            raise _bad("flags", "SPARSE is only valid in raw frames")
        if wire_code:
            raise _bad("wire dtype", f"{wire_code}, expected 0 in a quantized frame")
        if bits not in (2, 4, 8):
            raise _bad("bits", f"{bits}")
        if gran not in _GRANULARITIES:
            raise _bad("granularity", f"unknown code {gran}")
        if rnd not in _ROUNDINGS:
            raise _bad("rounding", f"unknown code {rnd}")
        granularity, rounding = _GRANULARITIES[gran], _ROUNDINGS[rnd]
        if version == 1:  # every field stored, used or not
            if not _pow2_ge32(group_size):
                raise _bad("group size", f"{group_size} is not a power of two >= 32")
            if not -MAX_NDIM <= channel_dim < MAX_NDIM:
                raise _bad("channel dim", f"{channel_dim} is outside [-8, 7]")
            if granularity == "channel" and not -ndim <= channel_dim < ndim:
                raise _bad("channel dim", f"{channel_dim} is out of range for ndim {ndim}")
        else:  # version 2: a field only where used, else 0; the channel dim in [0, ndim)
            if (granularity == "group") != bool(group_size) or (
                group_size and not _pow2_ge32(group_size)
            ):
                raise _bad("group size", f"{group_size} for {granularity} granularity")
            if granularity == "channel" and not 0 <= channel_dim < ndim:
                raise _bad("channel dim", f"{channel_dim} is not in [0, {ndim})")
            if granularity != "channel" and channel_dim:
                raise _bad("channel dim", f"{channel_dim}, expected 0")
            if rounding == "nearest" and seed:
                raise _bad("seed", f"{seed}, expected 0 with nearest rounding")
        groups = _num_groups(shape, granularity, group_size, channel_dim)
        if aux != 8 * groups:
            raise _bad("aux length", f"{aux}, expected {8 * groups}")
        if payload != -(-numel * bits // 8):
            raise _bad("payload length", f"{payload}, expected {-(-numel * bits // 8)}")
        wire = f"q{bits}"
    else:
        raise _bad("scheme", f"unknown code {scheme}")

    content = aux + payload
    if content > max_frame_size:
        raise _bad("body", f"{content} uncompressed bytes exceed max_frame_size")
    if coder == 0 and body != content:
        raise _bad("body length", f"{body}, expected {content}")
    if coder in (1, 2) and (content == 0) != (body == 0):
        raise _bad("body length", f"{body} for {content} uncompressed bytes")
    header = Header(
        version=version,
        dtype=dtype,
        shape=tuple(shape),
        scheme="raw" if scheme == 0 else "quantized",
        wire=wire,
        sparse=sparse,
        bits=bits,
        granularity=granularity,
        group_size=group_size,
        channel_dim=channel_dim,
        rounding=rounding,
        seed=seed,
        coder=_CODERS[coder],
        aux_bytes=aux,
        payload_bytes=payload,
        body_bytes=body,
        header_bytes=header_len,
    )
    return header, mv[header_len : header_len + body]


def read_header(frame, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> Header:
    """Validate a frame's header, lengths and CRC (not its body); return the header."""
    return _parse(frame, max_frame_size)[0]


def _unzstd(body: memoryview, content: int) -> bytes:
    if body[:4] != b"\x28\xb5\x2f\xfd":
        raise _bad("body", "not a zstd frame")
    try:
        declared = zstandard.frame_content_size(body)
    except zstandard.ZstdError as exc:
        raise _bad("body", f"bad zstd frame header ({exc})") from exc
    if declared != content:
        raise _bad("body", f"the zstd frame declares {declared} bytes, the header {content}")
    try:
        out = zstandard.ZstdDecompressor().decompress(
            body, max_output_size=content, allow_extra_data=False
        )
    except zstandard.ZstdError as exc:
        raise _bad("body", f"zstd: {exc}") from exc
    if len(out) != content:
        raise _bad("body", f"zstd gave {len(out)} bytes, expected {content}")
    return out


def _unlz4(body: memoryview, content: int) -> bytes:
    try:
        import lz4.block
    except ImportError as exc:
        raise _bad(
            "entropy coder", "lz4 frame, but the python package lz4 is not installed"
        ) from exc
    try:
        out = lz4.block.decompress(bytes(body), uncompressed_size=content)
    except Exception as exc:  # lz4.block.LZ4BlockError and friends
        raise _bad("body", f"lz4: {exc}") from exc
    if len(out) != content:
        raise _bad("body", f"lz4 gave {len(out)} bytes, expected {content}")
    return out


def _from_float32(x: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values -> bit patterns of ``dtype``: round to nearest even; NaN -> canonical."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    nan = np.isnan(x)
    if dtype == "float32":
        out = u.copy()
    elif dtype == "float16":
        with np.errstate(over="ignore", invalid="ignore"):
            out = x.astype(np.float16).view(np.uint16)
    else:  # bfloat16: the top half of the float32, rounded to nearest even
        wide = u.astype(np.uint64)
        out = ((wide + 0x7FFF + ((wide >> 16) & 1)) >> 16).astype(np.uint16)
    out[nan] = _CANONICAL_NAN[dtype]
    return out


def _to_float32(bits: np.ndarray, dtype: str) -> np.ndarray:
    """Bit patterns of ``dtype`` -> float32 values (exact: every value widens exactly)."""
    if dtype == "float32":
        return bits.view(np.float32)
    if dtype == "float16":
        return bits.view(np.float16).astype(np.float32)
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _decode_raw(h: Header, aux: bytes, payload: bytes) -> np.ndarray:
    wire_dtype = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[h.wire]
    utype = np.uint32 if wire_dtype == "float32" else np.uint16
    numel = h.numel
    if h.sparse:
        mask = np.frombuffer(aux, dtype=np.uint8)
        if numel % 8 and int(mask[-1]) >> (numel % 8):
            raise _bad("sparse mask", "unused high bits of the last byte are not 0")
        nonzero = np.unpackbits(mask, count=numel, bitorder="little").astype(bool)
        values = np.frombuffer(payload, dtype=f"<u{np.dtype(utype).itemsize}")
        if values.size != int(nonzero.sum()):
            raise _bad("payload length", "does not match the mask's count")
        if not values.all():
            raise _bad("payload", "a value the mask marks as non-zero is zero")
        wire_bits = np.zeros(numel, dtype=utype)
        wire_bits[nonzero] = values
    else:
        wire_bits = np.frombuffer(payload, dtype=f"<u{np.dtype(utype).itemsize}").astype(utype)
    if wire_dtype == h.dtype:
        return wire_bits
    return _from_float32(_to_float32(wire_bits, wire_dtype), h.dtype)


def _unpack_codes(payload: bytes, numel: int, bits: int) -> np.ndarray:
    """Code k at bit (k * bits) % 8 of byte (k * bits) // 8, lowest bits first."""
    data = np.frombuffer(payload, dtype=np.uint8)
    if (numel * bits) % 8 and int(data[-1]) >> ((numel * bits) % 8):
        raise _bad("payload", "unused high bits of the last byte are not 0")
    per = 8 // bits
    shifts = np.arange(per, dtype=np.uint8) * bits
    codes = (data[:, None] >> shifts) & ((1 << bits) - 1)
    return codes.reshape(-1)[:numel]


def _dequantize(h: Header, aux: bytes, payload: bytes) -> np.ndarray:
    groups = h.groups
    params = np.frombuffer(aux, dtype="<f4").astype(np.float32)
    scale, offset = params[:groups], params[groups:]
    if not np.isfinite(params).all():
        raise _bad("scales", "a scale or offset is NaN or infinite")
    if (scale < 0).any():
        raise _bad("scales", "a scale is negative")
    # Decoding is monotone in the code: every value lies between what codes 0 and qmax give.
    # A frame any of whose groups would decode to inf (in float32, or after the cast to its
    # dtype) is refused; the encoder never writes one.
    with np.errstate(over="ignore"):
        qmax = np.float32((1 << h.bits) - 1)
        top = np.add(offset, np.multiply(qmax, scale, dtype=np.float32), dtype=np.float32)
    for ends in (offset, top):
        if not np.isfinite(_to_float32(_from_float32(ends, h.dtype), h.dtype)).all():
            raise _bad("scales", "a group decodes to inf (its offset + qmax x scale overflows)")
    code = _unpack_codes(payload, h.numel, h.bits).astype(np.float32)
    # Per element of group g: x = offset[g] + code * scale[g], in float32: the product rounded,
    # then the sum rounded (two operations, never one fused multiply-add). Each granularity
    # lines the codes up with their group's parameters by a reshape.
    if h.granularity == "tensor":
        c, s, o = code, scale, offset
    elif h.granularity == "channel":
        d = h.channel_dim % len(h.shape)
        outer, inner = math.prod(h.shape[:d]), math.prod(h.shape[d + 1 :])
        c = code.reshape(outer, groups, inner)
        s, o = scale[None, :, None], offset[None, :, None]
    else:
        c = np.zeros(groups * h.group_size, dtype=np.float32)
        c[: h.numel] = code
        c = c.reshape(groups, h.group_size)
        s, o = scale[:, None], offset[:, None]
    product = np.multiply(c, s, dtype=np.float32)  # cannot overflow: checked above
    x = np.add(o, product, dtype=np.float32)
    return _from_float32(x.reshape(-1)[: h.numel], h.dtype)


def decode_bits(frame, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> Decoded:
    """Decode one frame (exactly one frame long) to the bit patterns of its dtype.

    Raises:
        CodecError: the frame is malformed, truncated, corrupted or over ``max_frame_size``.
        TypeError: ``frame`` is not bytes-like.
    """
    h, body = _parse(frame, max_frame_size)
    content = h.aux_bytes + h.payload_bytes
    if h.coder == "zstd" and content:
        data = _unzstd(body, content)
    elif h.coder == "lz4" and content:
        data = _unlz4(body, content)
    else:
        data = bytes(body)
    aux, payload = data[: h.aux_bytes], data[h.aux_bytes : content]
    bits = _dequantize(h, aux, payload) if h.scheme == "quantized" else _decode_raw(h, aux, payload)
    return Decoded(h, bits.reshape(h.shape))


def decode(frame, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> np.ndarray:
    """Decode one frame to a numpy array of its shape: float32, float16, or (for bfloat16
    frames) float32 holding the bfloat16 values exactly. See :func:`decode_bits`."""
    return decode_bits(frame, max_frame_size=max_frame_size).to_numpy()
