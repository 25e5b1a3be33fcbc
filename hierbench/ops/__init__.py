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
    "cpu_kernel",
    "dequantize",
    "group_minmax",
    "quantize",
    "reference",
    "set_cpu_kernel",
]


def cpu_kernel(x: torch.Tensor | None = None, cfg: QuantConfig | None = None) -> str:
    """Which CPU kernel quantizes in groups of 32, 64, 128 or 256 with round to nearest.

    Without arguments: the selection. With ``x`` and ``cfg``: the kernel that
    ``quantize(x, cfg)`` runs on the CPU (``"portable"`` for every input the AVX-512 kernel does
    not take: another dtype, granularity, group size or rounding, or more than 16 MiB).

    ``"avx512"``: the hand-written AVX-512 kernel (csrc/quant/quant_cpu_avx512.cpp), used when the
    CPU has AVX-512 F/BW/DQ/VL/VBMI (Intel Ice Lake and later, AMD Zen 4 and later) for float32,
    float16 and bfloat16 inputs of up to 16 MiB (larger ones stream from DRAM, where the
    portable loops measured a few per cent faster). ``"portable"``: the compiler-vectorised
    loops that handle every other case. Both produce the same bits (the tests hold both to
    :mod:`hierbench.ops.reference`); the choice only changes speed.
    ``HIERBENCH_CPU_KERNEL=portable`` in the environment selects the portable loops when the
    extension loads.
    """
    if x is None and cfg is None:
        return _ext.load().cpu_kernel()
    if x is None or cfg is None:
        raise TypeError("cpu_kernel() takes no arguments, or both x and cfg")
    return _ext.load().cpu_kernel_for(x, cfg.bits, cfg.granularity, cfg.group_size, cfg.rounding)


def set_cpu_kernel(name: str) -> str:
    """Select the CPU kernel (``"avx512"`` or ``"portable"``, see :func:`cpu_kernel`).

    Returns the previous selection, so that ``prev = set_cpu_kernel("portable")`` ...
    ``set_cpu_kernel(prev)`` restores it. Process-wide, not thread-local: for benchmarks and
    tests. Raises ``ValueError`` for another name, or for ``"avx512"`` on a CPU without it.
    """
    return _ext.load().set_cpu_kernel(name)


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
