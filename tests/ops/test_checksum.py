"""hierbench.ops.crc32 (csrc/checksum/crc32.cpp) against zlib.crc32, for every kernel.

The codec's frames carry zlib's CRC-32, so the native kernels must give zlib's value on every
input: every length up to 300 bytes (the table path, the 64-byte and 256-byte folds and
their 64-, 16-byte and byte tails), lengths around the fold loops and the portable kernel's
4 x 2 KiB interleaved rounds, large buffers, misaligned starts, any running value, and split
buffers continued with the running value.
"""

from __future__ import annotations

import platform
import random
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from hierbench import _ext, codec, ops

KERNELS = ops.available_crc32_kernels()
crc32_with = _ext.load().crc32_with

# vpclmul: 256-byte steps, 64-byte steps, then pclmul's 16-byte steps and bytes; pclmul: 64-byte
# steps, 16-byte steps, bytes. Portable: rounds of 4 x 2048 bytes.
EDGES = [
    319,
    320,
    511,
    512,
    513,
    767,
    1000,
    4095,
    4096,
    4097,
    8191,
    8192,
    8193,
    8192 * 3 + 77,
    65535,
    65536,
    65537,
]


@pytest.mark.parametrize("kernel", KERNELS)
def test_check_values(kernel):
    assert crc32_with(kernel, b"123456789") == 0xCBF43926  # the CRC-32 catalogue check value
    assert crc32_with(kernel, b"") == 0
    assert crc32_with(kernel, b"", 0xDEADBEEF) == 0xDEADBEEF
    assert crc32_with(kernel, bytes(1 << 16)) == zlib.crc32(bytes(1 << 16))
    assert crc32_with(kernel, b"\xff" * 100_003) == zlib.crc32(b"\xff" * 100_003)


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_short_length_and_running_value(kernel):
    rng = random.Random(0)
    for n in range(301):
        data = rng.randbytes(n)
        for value in (0, 0xFFFFFFFF, rng.getrandbits(32)):
            assert crc32_with(kernel, data, value) == zlib.crc32(data, value), (n, value)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("n", [*EDGES, (1 << 20) + 13, 5 << 20])
def test_large_lengths(kernel, n):
    data = random.Random(n).randbytes(n)
    value = random.Random(-n).getrandbits(32)
    assert crc32_with(kernel, data, value) == zlib.crc32(data, value)


@pytest.mark.parametrize("kernel", KERNELS)
def test_misaligned_starts(kernel):
    buf = bytearray(random.Random(2).randbytes(20_000))
    view = memoryview(buf)
    for start in range(17):
        for n in (63, 64, 200, 16_411):
            piece = view[start : start + n]
            assert crc32_with(kernel, piece) == zlib.crc32(piece), (start, n)


@pytest.mark.parametrize("kernel", KERNELS)
def test_continues_a_running_value(kernel):
    data = random.Random(3).randbytes(50_000)
    for cut in (0, 1, 15, 63, 64, 8191, 25_000, 49_999, 50_000):
        head = crc32_with(kernel, data[:cut])
        assert crc32_with(kernel, data[cut:], head) == zlib.crc32(data), cut


def test_default_kernel_and_public_function():
    assert ops.crc32_kernel() == KERNELS[0]
    assert "portable" in KERNELS
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() and platform.machine() == "x86_64" else ""
    # A CPU that has the instructions must get the kernel that uses them.
    if " pclmulqdq" in flags and " sse4_1" in flags:
        wide = all(f" {f}" in flags for f in ("vpclmulqdq", "avx512f", "avx512vl"))
        assert ops.crc32_kernel() == ("vpclmul" if wide else "pclmul")
    data = random.Random(4).randbytes(100_000)
    assert ops.crc32(data) == zlib.crc32(data)
    assert ops.crc32(data[7:], ops.crc32(data[:7])) == zlib.crc32(data)


def test_buffer_types():
    a = np.arange(1000, dtype=np.float32)
    expected = zlib.crc32(a.tobytes())
    assert ops.crc32(a) == expected  # multi-byte items: the bytes, in memory order
    assert ops.crc32(memoryview(a)) == expected
    assert ops.crc32(bytearray(a.tobytes())) == expected
    assert ops.crc32(torch.from_numpy(a).numpy()) == expected
    assert ops.crc32(np.empty(0, dtype=np.uint8)) == 0


def test_bad_arguments_are_refused_like_zlib():
    strided = memoryview(bytes(100))[::2]
    with pytest.raises(BufferError):
        zlib.crc32(strided)
    with pytest.raises(BufferError):
        ops.crc32(strided)
    for bad in ("text", [1, 2], None, 3):
        with pytest.raises(TypeError):
            ops.crc32(bad)
    with pytest.raises(ValueError, match=r"value must be in \[0, 2\*\*32\), got -1"):
        ops.crc32(b"x", -1)
    with pytest.raises(ValueError, match="got 4294967296"):
        ops.crc32(b"x", 1 << 32)
    with pytest.raises(TypeError, match="value must be an int, got float"):
        ops.crc32(b"x", 1.0)
    with pytest.raises(ValueError, match=r"crc32 kernel must be one of .*'portable'.*got 'sse9'"):
        crc32_with("sse9", b"x")


def test_threads_share_it_with_the_gil_released():
    """Buffers from 64 KiB up are read without the GIL: threads must still get their own CRC."""
    datas = [random.Random(10 + i).randbytes((1 << 20) + i) for i in range(4)]
    expected = [zlib.crc32(d) for d in datas]
    results = [[] for _ in datas]

    def work(i):
        for _ in range(20):
            results[i].append(ops.crc32(datas[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(datas))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, r in enumerate(results):
        assert r == [expected[i]] * 20


def test_the_codec_checks_frames_with_it():
    assert codec._crc32_function() is ops.crc32
    frame = codec.encode(torch.randn(1000), "q4+zstd1")
    body, stored = frame[:-4], int.from_bytes(frame[-4:], "little")
    assert stored == zlib.crc32(body) == ops.crc32(body)
