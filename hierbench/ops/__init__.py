"""Typed, documented wrappers over ``torch.ops.hierbench.*``: the kernels' public API.

Every op has CPU and (when built with CUDA) CUDA kernels, a fake kernel for ``torch.compile`` and
``opcheck`` (``_fake.py``), and a pure-PyTorch definition in :mod:`hierbench.ops.reference` that the
tests hold the kernels to. Wrappers only normalise arguments; the work is done in C++.

Allowed imports: ``hierbench._ext``, ``hierbench.errors``, torch.
"""

from __future__ import annotations

import torch

from hierbench import _ext
from hierbench.ops import reference

_ext.load()  # runs the TORCH_LIBRARY registrations
from hierbench.ops import _fake  # noqa: E402,F401  (registers fake kernels; needs the op schemas)
from hierbench.ops.quant import (  # noqa: E402
    QuantConfig,
    QuantizedTensor,
    dequantize,
    quantize,
)

__all__ = [
    "QuantConfig",
    "QuantizedTensor",
    "dequantize",
    "group_minmax",
    "quantize",
    "reference",
]


def group_minmax(
    x: torch.Tensor,
    group_size: int,
    *,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group minimum and maximum, in one pass.

    Args:
        x: float32, float16 or bfloat16 tensor of any shape, on CPU or CUDA. Read as
            ``x.flatten()`` (a non-contiguous input is made contiguous first).
        group_size: number of consecutive elements per group (> 0). The last group may be partial.
        out: optional preallocated ``(min, max)``, each float32 of shape ``(G,)`` on x's device,
            reused by loops that must not allocate.

    Returns:
        ``(min, max)``: float32 tensors of shape ``(G,)``, ``G = ceil(x.numel() / group_size)``.
        A group holding a NaN gets NaN for both; +-inf are ordinary values.

    Reference: :func:`hierbench.ops.reference.group_minmax` (bit-exact).
    """
    if out is None:
        return torch.ops.hierbench.group_minmax.default(x, group_size)
    lo, hi = out
    torch.ops.hierbench.group_minmax.out(x, group_size, min=lo, max=hi)
    return lo, hi
