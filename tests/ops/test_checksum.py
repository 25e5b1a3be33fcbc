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


def test_bad_arguments_are_refused():
    """Buffers as zlib.crc32 refuses them; a value outside [0, 2**32), which zlib.crc32 would
    silently truncate to its low 32 bits, is an error."""
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
    for bad_value in (-1, 1 << 32):
        with pytest.raises(TypeError):  # pybind11's uint32 conversion refuses it
            crc32_with("portable", b"x", bad_value)
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
    assert codec.frame._crc32_function() is ops.crc32
    frame = codec.encode(torch.randn(1000), "q4+zstd1")
    body, stored = frame[:-4], int.from_bytes(frame[-4:], "little")
    assert stored == zlib.crc32(body) == ops.crc32(body)


# -- the folding constants, on every machine --------------------------------------------------
# The kernels above run only where the CPU has their instructions (vpclmul: AVX-512 VPCLMULQDQ,
# which many CI hosts lack). This model runs everywhere: it reads the constants and the lane
# mask from csrc/checksum/crc32.cpp, folds exactly as the C++ does (same lane order, same
# _mm_set_epi64x / _mm512_set_epi64 argument order: highest qword first), and must give
# zlib's value. It also checks each constant against its derivation, k(e) = reflect32(x^e mod P)
# << 1.

SOURCE = Path(__file__).resolve().parents[2] / "csrc" / "checksum" / "crc32.cpp"
_M64 = (1 << 64) - 1


def _qwords(args: str) -> list[int]:
    """_mm*_set_epi64* arguments (highest qword first) as qwords, lowest first."""
    return [int(a.strip().removesuffix("LL"), 0) for a in args.split(",")][::-1]


def _constants() -> dict[str, list[int]]:
    import re

    src = SOURCE.read_text()
    found = {}
    for name, args in re.findall(
        r"const __m(?:128|512)i (\w+) = _mm\w*_set_epi64x?\(([^;]*)\);", src
    ):
        found.setdefault(name, _qwords(args))
    mask = re.findall(r"_mm512_maskz_mov_epi64\((0x[0-9A-Fa-f]+), z\)", src)
    assert set(found) >= {"k1", "k4", "k256", "k64", "klanes"} and len(mask) == 1, found
    found["mask"] = [int(mask[0], 16)]
    return found


def _clmul(a: int, b: int) -> int:
    r = 0
    while b:
        if b & 1:
            r ^= a
        a <<= 1
        b >>= 1
    return r


def _fold(x: int, lo: int, hi: int) -> int:  # one 128-bit lane: clmul(x, k, 0x00) ^ (.., 0x11)
    return _clmul(x & _M64, lo) ^ _clmul(x >> 64, hi)


def _table_raw(c: int, data: bytes) -> int:
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ (0xEDB88320 if c & 1 else 0)
    return c


def _finish(x: int, data: bytes, pos: int, k1: list[int]) -> int:
    while len(data) - pos >= 16:
        x = _fold(x, *k1) ^ int.from_bytes(data[pos : pos + 16], "little")
        pos += 16
    return _table_raw(_table_raw(0, x.to_bytes(16, "little")), data[pos:])


def _model_pclmul(data: bytes, crc: int, k: dict) -> int:
    c = crc ^ 0xFFFFFFFF
    if len(data) < 64:
        return _table_raw(c, data) ^ 0xFFFFFFFF
    blk = [int.from_bytes(data[16 * i : 16 * i + 16], "little") for i in range(len(data) // 16)]
    x = blk[:4]
    x[0] ^= c
    pos = 4
    while len(data) - 16 * pos >= 64:
        x = [_fold(x[i], *k["k4"]) ^ blk[pos + i] for i in range(4)]
        pos += 4
    acc = x[0]
    for i in (1, 2, 3):
        acc = _fold(acc, *k["k1"]) ^ x[i]
    return _finish(acc, data, 16 * pos, k["k1"]) ^ 0xFFFFFFFF


def _model_vpclmul(data: bytes, crc: int, k: dict) -> int:
    if len(data) < 256:
        return _model_pclmul(data, crc, k)
    c = crc ^ 0xFFFFFFFF

    def zload(off):  # a 512-bit register: 4 lanes of 16 bytes, lane 0 first
        return [int.from_bytes(data[off + 16 * j : off + 16 * j + 16], "little") for j in range(4)]

    def zfold(z, kk):  # lane j uses qwords 2j (lo) and 2j+1 (hi) of kk
        return [_fold(z[j], kk[2 * j], kk[2 * j + 1]) for j in range(4)]

    def zxor(a, b):
        return [p ^ q for p, q in zip(a, b, strict=True)]

    z = [zload(64 * i) for i in range(4)]
    z[0][0] ^= c
    pos = 256
    while len(data) - pos >= 256:
        z = [zxor(zfold(z[i], k["k256"]), zload(pos + 64 * i)) for i in range(4)]
        pos += 256
    acc = z[0]
    for i in (1, 2, 3):
        acc = zxor(zfold(acc, k["k64"]), z[i])
    while len(data) - pos >= 64:
        acc = zxor(zfold(acc, k["k64"]), zload(pos))
        pos += 64
    mask = k["mask"][0]  # qword mask: lane j kept when bits 2j and 2j+1 are set
    kept = [acc[j] if (mask >> (2 * j)) & 3 == 3 else 0 for j in range(4)]
    lanes = zxor(zfold(acc, k["klanes"]), kept)
    x = lanes[0] ^ lanes[1] ^ lanes[2] ^ lanes[3]
    return _finish(x, data, pos, k["k1"]) ^ 0xFFFFFFFF


def _k(e: int) -> int:
    r = 1
    for _ in range(e):
        r <<= 1
        if r >> 32:
            r ^= 0x104C11DB7
    return int(f"{r:032b}"[::-1], 2) << 1


def test_folding_constants_are_derived_as_documented():
    k = _constants()
    assert k["k1"] == [_k(160), _k(96)]
    assert k["k4"] == [_k(544), _k(480)]
    assert k["k256"] == [_k(2080), _k(2016)] * 4
    assert k["k64"] == [_k(544), _k(480)] * 4
    assert k["klanes"] == [_k(416), _k(352), _k(288), _k(224), _k(160), _k(96), 0, 0]


@pytest.mark.parametrize("model", [_model_pclmul, _model_vpclmul])
def test_folding_model_with_the_source_constants_matches_zlib(model):
    k = _constants()
    rng = random.Random(5)
    lengths = [*range(0, 70), *range(250, 330), 511, 512, 513, 575, 576, 767, 768, 1000, 1101]
    for n in lengths:
        data = rng.randbytes(n)
        value = rng.getrandbits(32)
        assert model(data, value, k) == zlib.crc32(data, value), n
