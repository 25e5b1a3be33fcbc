"""Typed, documented wrappers over ``torch.ops.hierbench.*``: the kernels' public API.

Every op has CPU and (when built with CUDA) CUDA kernels, a fake kernel for ``torch.compile`` and
``opcheck`` (``_fake.py``), and a pure-PyTorch definition in :mod:`hierbench.ops.reference` that the
tests hold the kernels to (the CUDA kernels are compiled in CI, not yet run on a GPU). Wrappers only
normalise arguments; the work is done in C++.

Allowed imports: ``hierbench._ext``, ``hierbench.errors``, torch.

Also :func:`fake_quantize` (:mod:`hierbench.ops.fake_quant`): quantize-dequantize with a
straight-through gradient, for quantization-aware training (:func:`quantize` itself refuses a
tensor that requires grad instead of dropping its gradient); :func:`crc32`
(:mod:`hierbench.ops.checksum`): the codec's frame checksum, zlib's CRC-32 computed faster.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from hierbench.errors import ConfigError

# Checked first, before any submodule is imported: a failed import of this package leaves no
# half-initialised submodule behind (hierbench.ops.quant...) that a second import would find
# and use, so every attempt to use the ops raises the same error, not only the first one.
_CPU_KERNEL_ENV = "HIERBENCH_CPU_KERNEL"
if os.environ.get(_CPU_KERNEL_ENV, "") not in ("", "avx512", "portable"):
    raise ConfigError(
        f"{_CPU_KERNEL_ENV}={os.environ[_CPU_KERNEL_ENV]!r}: expected 'avx512' (the default: used "
        "where the CPU has it) or 'portable'"
    )

import torch  # noqa: E402

from hierbench import _ext  # noqa: E402
from hierbench.ops import reference  # noqa: E402
from hierbench.ops.checksum import available_crc32_kernels, crc32, crc32_kernel  # noqa: E402

_ext.load().cpu_kernel()  # runs the TORCH_LIBRARY registrations; the kernel reads the env now
from hierbench.ops import _fake  # noqa: E402,F401  (registers fake kernels; needs the op schemas)
from hierbench.ops.fake_quant import fake_quantize  # noqa: E402
from hierbench.ops.quant import (  # noqa: E402
    QuantConfig,
    QuantizedTensor,
    check_input,
    dequantize,
    quantize,
)

__all__ = [
    "QuantConfig",
    "QuantizedTensor",
    "available_cpu_kernels",
    "available_crc32_kernels",
    "cpu_kernel",
    "crc32",
    "crc32_kernel",
    "dequantize",
    "fake_quantize",
    "group_minmax",
    "quantize",
    "reference",
    "set_cpu_kernel",
    "use_cpu_kernel",
]


def available_cpu_kernels() -> tuple[str, ...]:
    """The CPU quantize kernels this build and CPU can run: ``("avx512", "portable")`` or
    ``("portable",)`` (see :func:`cpu_kernel`)."""
    return tuple(_ext.load().available_cpu_kernels())


def cpu_kernel(x: torch.Tensor | None = None, cfg: QuantConfig | None = None) -> str:
    """Which CPU kernel quantizes with round to nearest (groups of 32-256, per tensor, per
    channel).

    Without arguments: the selection (:func:`set_cpu_kernel`). With ``x`` (a CPU tensor) and
    ``cfg``: the kernel that ``quantize(x, cfg)`` runs, ``"avx512"`` when it takes the bulk of
    the call: per group (32, 64, 128, 256), the full blocks of 16 groups of an input of up to
    16 MiB (the remaining groups, at most 15 and a partial one, always take the portable loops);
    per tensor (over 64 Ki elements) and groups over 64 Ki elements, the min/max and the codes of
    every whole 64 elements; per channel, when the elements after the channel dimension number a
    multiple of 64 (NCHW with H * W = 64, 256, 1024, ...). Else ``"portable"``: stochastic
    rounding, short channel rows, fewer than 16 full groups, or more than 16 MiB per group.

    ``"avx512"``: the hand-written AVX-512 kernel (csrc/quant/quant_cpu_avx512.cpp), used for
    float32, float16 and bfloat16 inputs of up to 16 MiB (larger ones stream from DRAM, where the
    portable loops measured a few per cent faster) when the build has it (GCC, x86-64) and the
    CPU reports AVX-512 F/BW/DQ/VL/VBMI (AMD Zen 4 and later; Intel Xeon since Ice Lake, but
    not Intel's client cores since Alder Lake). ``"portable"``: the compiler-vectorised loops
    that handle every other case. Both produce the same bits (the tests hold both to
    :mod:`hierbench.ops.reference`); the choice only changes speed.
    ``HIERBENCH_CPU_KERNEL=portable`` in the environment selects the portable loops from the
    start (read once, when :mod:`hierbench.ops` is imported; any value but ``avx512``,
    ``portable`` or empty is a :class:`hierbench.errors.ConfigError` raised by that import, and
    again by every later attempt to import or use the ops: it never half-succeeds).

    Raises:
        TypeError: only one of ``x`` and ``cfg`` given, ``x`` not a float32/float16/bfloat16
            tensor, or ``cfg`` not a :class:`QuantConfig` (as :func:`quantize`).
        ValueError: ``x`` is not on the CPU.
    """
    if x is None and cfg is None:
        return _ext.load().cpu_kernel()
    if x is None or cfg is None:
        raise TypeError("cpu_kernel() takes no arguments, or both x and cfg")
    check_input(x, cfg)
    if x.device.type != "cpu":
        raise ValueError(f"cpu_kernel(x, cfg) is about CPU tensors; x is on {x.device}")
    return _ext.load().cpu_kernel_for(
        x, cfg.bits, cfg.granularity, cfg.group_size, cfg.rounding, cfg.channel_dim
    )


def set_cpu_kernel(name: str) -> str:
    """Select the CPU kernel (``"avx512"`` or ``"portable"``, see :func:`cpu_kernel`).

    Returns the previous selection, so that ``prev = set_cpu_kernel("portable")`` ...
    ``set_cpu_kernel(prev)`` restores it (or use :func:`use_cpu_kernel`). Process-wide, not
    thread-local: for benchmarks and tests. Raises ``ValueError`` for another name, or for
    ``"avx512"`` where it is not in :func:`available_cpu_kernels`.
    """
    return _ext.load().set_cpu_kernel(name)


@contextlib.contextmanager
def use_cpu_kernel(name: str) -> Iterator[str]:
    """``with use_cpu_kernel("portable"): ...``: :func:`set_cpu_kernel` for the block, then the
    previous selection again (also on an exception). Yields ``name``."""
    prev = set_cpu_kernel(name)
    try:
        yield name
    finally:
        set_cpu_kernel(prev)


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
