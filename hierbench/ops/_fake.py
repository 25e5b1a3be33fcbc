"""Fake (meta) kernels: output shapes and dtypes from input metadata, without running anything.

They let ``torch.compile`` trace the ops and ``torch.library.opcheck`` verify the schemas. Each one
repeats the C++ argument checks with ``torch._check`` so that tracing fails the same way.
"""

from __future__ import annotations

import torch

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_float(x: torch.Tensor, name: str) -> None:
    torch._check(
        x.dtype in _FLOAT_DTYPES,
        lambda: f"{name} must be float32, float16 or bfloat16, got {x.dtype}",
    )


@torch.library.register_fake("hierbench::group_minmax")
def _group_minmax_fake(x: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    _check_float(x, "x")
    torch._check(group_size > 0, lambda: f"group_size must be positive, got {group_size}")
    groups = (x.numel() + group_size - 1) // group_size
    return x.new_empty(groups, dtype=torch.float32), x.new_empty(groups, dtype=torch.float32)


@torch.library.register_fake("hierbench::group_minmax.out")
def _group_minmax_out_fake(x, group_size, *, min, max) -> None:
    _check_float(x, "x")
    torch._check(group_size > 0, lambda: f"group_size must be positive, got {group_size}")


def _check_quant(bits: int, granularity: str, group_size: int, rounding: str | None = None):
    torch._check(bits in (2, 4, 8), lambda: f"bits must be 2, 4 or 8, got {bits}")
    torch._check(
        granularity in ("tensor", "channel", "group"),
        lambda: f"granularity must be 'tensor', 'channel' or 'group', got '{granularity}'",
    )
    if granularity == "group":
        torch._check(
            group_size >= 32 and group_size & (group_size - 1) == 0,
            lambda: f"group_size must be a power of two >= 32, got {group_size}",
        )
    if rounding is not None:
        torch._check(
            rounding in ("nearest", "stochastic"),
            lambda: f"rounding must be 'nearest' or 'stochastic', got '{rounding}'",
        )


def _quant_sizes(shape, bits: int, granularity: str, group_size: int, channel_dim: int):
    """(payload bytes, groups) of a quantized tensor of ``shape``; mirrors quant_common.h."""
    numel = 1
    for s in shape:
        numel = numel * s
    nbytes = (numel * bits + 7) // 8
    if granularity == "tensor":
        return nbytes, 1
    if granularity == "group":
        return nbytes, (numel + group_size - 1) // group_size
    ndim = len(shape)
    torch._check(ndim > 0, lambda: "granularity 'channel' needs a tensor with at least one dim")
    torch._check(
        -ndim <= channel_dim < ndim,
        lambda: f"channel_dim must be in [{-ndim}, {ndim - 1}], got {channel_dim}",
    )
    return nbytes, shape[channel_dim % ndim]


@torch.library.register_fake("hierbench::quantize")
def _quantize_fake(x, bits, granularity, group_size, channel_dim, rounding, seed):
    _check_float(x, "x")
    _check_quant(bits, granularity, group_size, rounding)
    nbytes, groups = _quant_sizes(x.shape, bits, granularity, group_size, channel_dim)
    return (
        x.new_empty(nbytes, dtype=torch.uint8),
        x.new_empty(groups, dtype=torch.float32),
        x.new_empty(groups, dtype=torch.float32),
    )


@torch.library.register_fake("hierbench::quantize.out")
def _quantize_out_fake(
    x, bits, granularity, group_size, channel_dim, rounding, seed, *, payload, scale, offset
) -> None:
    _check_float(x, "x")
    _check_quant(bits, granularity, group_size, rounding)


@torch.library.register_fake("hierbench::dequantize")
def _dequantize_fake(
    payload, scale, offset, shape, bits, granularity, group_size, channel_dim, dtype
):
    _check_quant(bits, granularity, group_size)
    torch._check(
        dtype in _FLOAT_DTYPES, lambda: f"dtype must be float32, float16 or bfloat16, got {dtype}"
    )
    return payload.new_empty(shape, dtype=dtype)


@torch.library.register_fake("hierbench::dequantize.out")
def _dequantize_out_fake(
    payload, scale, offset, shape, bits, granularity, group_size, channel_dim, *, out
) -> None:
    _check_quant(bits, granularity, group_size)
