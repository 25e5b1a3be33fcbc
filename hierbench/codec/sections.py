"""The body's sections: raw values (optionally as a ReLU-sparsity mask plus the non-zero
values), and the little-endian buffers the quantized scales, offsets and codes travel in.

Byte order and bit order of every section: docs/frame-format.md ("Sections").
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hierbench.codec.frame import _NAME_DTYPE, FrameHeader, _bad

_INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


def _le_buffer(t: torch.Tensor) -> np.ndarray:
    """A zero-copy uint8 view of a contiguous CPU tensor (bytes in native = little order)."""
    return t.reshape(-1).view(torch.uint8).numpy()


def _encode_raw(t: torch.Tensor, sparse: bool) -> tuple[list, int, int]:
    """The sections of a raw frame of the contiguous CPU tensor ``t`` (in its wire dtype):
    ``(pieces, aux length, payload length)``."""
    if sparse:
        a = t.reshape(-1).view(_INT_VIEW[t.dtype]).numpy()
        nonzero = a != 0  # on the bit pattern: -0.0 is kept
        mask = np.packbits(nonzero, bitorder="little")
        values = a[nonzero]
        return [mask, values.view(np.uint8)], mask.nbytes, values.nbytes
    return [_le_buffer(t)], 0, t.numel() * t.dtype.itemsize


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


def decoded_range_problem(
    scale: torch.Tensor, offset: torch.Tensor, bits: int, dtype: torch.dtype
) -> str | None:
    """Why a quantized frame with these (finite, non-negative) float32 ``scale`` and ``offset``
    could decode to +-inf in ``dtype``, or None. Decoding is ``fl(offset + fl(code * scale))``
    then a cast, monotone in the code: every value lies between what codes 0 and ``2^bits - 1``
    decode to, so the frame decodes finitely iff those two do, per group."""
    qmax = float((1 << bits) - 1)
    hi = offset + scale * qmax  # float32: the product rounded, then the sum (never an FMA)
    lo, hi = offset.to(dtype), hi.to(dtype)
    bad = ~(torch.isfinite(lo) & torch.isfinite(hi))
    if not bool(bad.any()):
        return None
    g = int(bad.nonzero()[0, 0])
    return (
        f"group {g} decodes to inf (offset {offset[g].item():.9g} + {int(qmax)} x scale "
        f"{scale[g].item():.9g} overflows {str(dtype).removeprefix('torch.')})"
    )


def _check_decoded_range(scale, offset, bits: int, dtype: torch.dtype) -> None:
    problem = decoded_range_problem(scale, offset, bits, dtype)
    if problem is not None:
        raise _bad("scales", problem)


def _decode_quantized(header: FrameHeader, aux, payload):
    """The float32 scales and offsets and the uint8 codes of a quantized frame, checked."""
    groups = header.aux_bytes // 8
    params = _tensor_from(aux, torch.float32, 2 * groups)
    scale, offset = params[:groups], params[groups:]
    if groups and not bool(torch.isfinite(params).all()):
        raise _bad("scales", "a scale or offset is NaN or infinite")
    if groups and bool((scale < 0).any()):
        raise _bad("scales", "a scale is negative")
    if groups:
        _check_decoded_range(scale, offset, header.quant.bits, header.dtype)
    codes = _tensor_from(payload, torch.uint8, header.payload_bytes)
    _check_padding(codes, header.numel * header.quant.bits, "payload")
    return scale, offset, codes


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
    if wire_dtype == header.dtype:
        return out
    # A cast: exact or rounded to nearest even (torch's), and every NaN the canonical quiet NaN
    # (torch's casts keep, quiet or replace a NaN's payload depending on the code path).
    out = out.to(header.dtype)
    nan = out.isnan()
    return out.masked_fill_(nan, math.nan) if bool(nan.any()) else out
