"""Activation codec: tensor <-> bytes for activations crossing an edge-cloud link.

What crosses a cut is an activation tensor. :class:`ActivationCodec` turns it into one
self-describing, CRC-checked frame and back:

1. **payload**: the raw values (as given, or cast to a wire dtype: fp32 / fp16 / bf16), or a
   min/max affine quantization (:func:`hierbench.ops.quantize`, 8 / 4 / 2 bits, per tensor,
   channel or group) as packed codes plus per-group float32 scale and offset;
2. optionally, for raw wires only, the **ReLU-sparsity** transform (``sparse=True``): a bitmask of
   the non-zero elements plus the non-zero values;
3. optionally a compression stage over all of that: **zstandard** (python-zstandard), **lz4**
   (python-lz4, optional: ``"q4+lz4"``), or ``auto`` (``auto_link_bps=``: none / lz4 / zstd-1 per
   frame, whichever sends a batch soonest over that link, from measured stage speeds;
   :mod:`hierbench.codec.stages`);
4. a little-endian header in front and a CRC-32 behind.

The frame format, byte by byte, and when sparsity pays: docs/frame-format.md.

Choosing an API (as in python-zstandard): the one-shot :func:`encode` / :func:`decode` build a
codec per call; in a loop, build one :class:`ActivationCodec` and reuse it (it keeps its zstd
contexts and counters; it is not thread-safe: one codec per thread)::

    codec = ActivationCodec("q4+zstd1")              # or ActivationCodec(CodecConfig(...))
    frame = codec.encode(activation)                 # bytes
    x_hat = codec.decode(frame, device="cuda")       # == dequantize(quantize(activation))
    codec.stats.compression_ratio

The frame format (version 2; version-1 frames still decode), every formula and rounding rule
included: docs/frame-format.md. Without PyTorch, :mod:`hierbench.codec.reference_decoder` (numpy +
zstandard only) decodes any frame to the same bits as :meth:`ActivationCodec.decode`.

Modules: ``config`` (:class:`CodecConfig`, spec strings), ``frame`` (header layout, field codes,
:func:`read_header`'s validation, CRC), ``sections`` (the body's raw / sparse / little-endian
sections), ``stages`` (lz4 stage, ``auto`` choice, crossover rates), ``activation_codec``
(:class:`ActivationCodec`, :class:`CodecStats`, one-shot API), ``reference_decoder`` (the
torch-free decoder). The names below are imported on first use, so
``import hierbench.codec.reference_decoder`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hierbench.codec.activation_codec import ActivationCodec, CodecStats, decode, encode
    from hierbench.codec.config import WIRES, ZSTD_MAX_LEVEL, ZSTD_MIN_LEVEL, CodecConfig
    from hierbench.codec.frame import (
        DEFAULT_MAX_FRAME_SIZE,
        FRAME_MAGIC,
        FRAME_VERSION,
        FRAME_VERSIONS,
        HEADER_SIZE,
        MAX_NDIM,
        FrameHeader,
        read_header,
    )

# public name -> the submodule defining it (imported on first access: PEP 562)
_EXPORTS = {
    "ActivationCodec": "activation_codec",
    "CodecStats": "activation_codec",
    "decode": "activation_codec",
    "encode": "activation_codec",
    "WIRES": "config",
    "ZSTD_MAX_LEVEL": "config",
    "ZSTD_MIN_LEVEL": "config",
    "CodecConfig": "config",
    "DEFAULT_MAX_FRAME_SIZE": "frame",
    "FRAME_MAGIC": "frame",
    "FRAME_VERSION": "frame",
    "FRAME_VERSIONS": "frame",
    "HEADER_SIZE": "frame",
    "MAX_NDIM": "frame",
    "FrameHeader": "frame",
    "read_header": "frame",
}

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "FRAME_MAGIC",
    "FRAME_VERSION",
    "FRAME_VERSIONS",
    "HEADER_SIZE",
    "MAX_NDIM",
    "WIRES",
    "ZSTD_MAX_LEVEL",
    "ZSTD_MIN_LEVEL",
    "ActivationCodec",
    "CodecConfig",
    "CodecStats",
    "FrameHeader",
    "decode",
    "encode",
    "read_header",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hierbench.codec' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"hierbench.codec.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
