"""CRC-32 (the codec's frame checksum) against ``zlib.crc32`` and a memcpy of the same bytes.

:func:`hierbench.ops.crc32` computes the value ``zlib.crc32`` does; this times each of its
kernels (``vpclmul`` / ``pclmul``: carry-less-multiply folding on 512- / 128-bit registers,
``portable``: slicing-by-8) and ``zlib.crc32``
itself on a frame-sized buffer (1 MiB: a q4+zstd1 ResNet-18 layer2 frame is 0.85 MB) and on a
DRAM-sized one (256 MiB). ``extra_info``: GB/s of input, the memcpy roofline ratio (``anchor``:
a copy of half the bytes, i.e. as many bytes moved as the CRC reads) and, for our kernels, the
time relative to ``zlib.crc32`` on the same buffer, timed back to back
(``time_ratio_vs_zlib_paired``).
"""

from __future__ import annotations

import zlib

import pytest
import torch

from benchmarks.anchors import paired_ratio
from hierbench import ops

SIZES = {"frame_1MiB": 1 << 20, "dram_256MiB": 256 << 20}
_BUFFERS: dict[int, memoryview] = {}


def _buffer(n: int) -> memoryview:
    if n not in _BUFFERS:
        g = torch.Generator().manual_seed(0)
        t = torch.randint(0, 256, (n,), dtype=torch.uint8, generator=g)
        _BUFFERS[n] = memoryview(t.numpy())
    return _BUFFERS[n]


def _kernel_fn(kernel: str):
    from hierbench import _ext

    if kernel == "zlib":
        return zlib.crc32
    if kernel not in ops.available_crc32_kernels():
        pytest.skip(f"crc32 kernel {kernel!r} is not available on this CPU / build")
    native = _ext.load().crc32_with
    return lambda data: native(kernel, data)


@pytest.mark.parametrize("size_name", list(SIZES))
@pytest.mark.parametrize("kernel", ["vpclmul", "pclmul", "portable", "zlib"])
def test_crc32(benchmark, anchor, kernel, size_name):
    n = SIZES[size_name]
    buf = _buffer(n)
    fn = _kernel_fn(kernel)
    assert fn(buf) == zlib.crc32(buf)  # same value, or the timing means nothing

    def call():
        return fn(buf)

    benchmark.extra_info.update(kernel=kernel, nbytes=n, default_kernel=ops.crc32_kernel())
    benchmark(call)
    anchor(benchmark, n, 0, fn=call)
    if kernel != "zlib":
        benchmark.extra_info["time_ratio_vs_zlib_paired"] = paired_ratio(
            call, lambda: zlib.crc32(buf)
        )
