"""The fast path for per-tensor and per-channel quantization (and groups over 64 Ki elements):
min/max and codes by the AVX-512 span kernel (csrc/quant/quant_cpu_avx512.cpp: ``minmax``,
``quantize_span``), per-channel runs by the portable loops with one scalar pair per run.

Both CPU kernels (``avx512`` where the CPU has it, and ``portable``) must equal
:func:`hierbench.ops.reference.quantize` bit for bit on: empty, one element, odd sizes (tails of
1-63 elements after the vectors and a tail of < 16 in the min/max), several parallel chunks, every
bit width and input dtype, channel dims whose rows are a multiple of 64 (the kernel's rows) or
not, negative channel dims, non-contiguous inputs, and NaN / inf / degenerate ranges anywhere.
"""

from __future__ import annotations

import pytest
import torch

from hierbench import ops
from hierbench.ops import QuantConfig, reference

from .test_cpu_kernels import AVX512, KERNELS
from .test_quant import _assert_quant_equal

pytestmark = pytest.mark.filterwarnings("ignore")

BITS = [2, 4, 8]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
CHUNK = 1 << 16  # elements per parallel task in quant_cpu.cpp


@pytest.fixture(params=KERNELS)
def kernel(request):
    with ops.use_cpu_kernel(request.param):
        yield request.param


def _check(x, bits, gran, channel_dim=1, group_size=128, rounding="nearest"):
    args = (bits, gran, group_size, channel_dim, rounding, 11)
    got = torch.ops.hierbench.quantize(x, *args)
    want = reference.quantize(x, *args)
    _assert_quant_equal(got, want)


def _data(numel, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(numel, generator=g) * torch.rand(numel, generator=g).exp() * 3 - 0.5
    return x.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("threads", [1, 2])
def test_per_tensor_sizes(kernel, threads, dtype):
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        # empty, 1, a min/max tail only, odd, one chunk exactly, chunk + tails of 1 / 63 / 64 + 1
        for numel in (0, 1, 15, 17, 1000, 4097, CHUNK, CHUNK + 1, CHUNK + 63, 3 * CHUNK + 65):
            x = _data(numel, numel, dtype)
            for bits in BITS:
                _check(x, bits, "tensor")
    finally:
        torch.set_num_threads(prev)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_per_channel_shapes(kernel, dtype):
    shapes = [
        ((8, 16, 16, 16), 1),  # NCHW, rows of 256: the kernel's rows
        ((4, 32, 8, 8), 1),  # rows of 64
        ((4, 32, 8, 8), -3),  # the same dim, negative
        ((3, 5, 7, 9), 1),  # rows of 63: portable runs
        ((2, 6, 40), 1),  # rows of 40 (>= 32: runs; < 64: column min/max)
        ((2, 6, 5), 1),  # short runs: the per-element table
        ((64, 130), -1),  # channel last: changes every element
        ((130, 64), 0),  # rows of 64, one outer
        ((1,), 0),  # one element
        ((0, 4, 64), 1),  # empty
        ((3, 0, 64), 1),  # no channels
        ((2, 3, 0), 1),  # channels with no elements (rows of 0)
        ((2, 3, 0, 64), 1),
        ((2, 3, 4096 + 64), 1),  # long rows, several min/max pieces per chunk
        ((1, 2, 3 * CHUNK + 128), 1),  # a row over a chunk: min/max pieces
    ]
    for shape, cd in shapes:
        x = _data(int(torch.tensor(shape).prod()), len(shape), dtype).reshape(shape)
        for bits in BITS:
            _check(x, bits, "channel", channel_dim=cd)


def test_large_groups_and_stochastic(kernel):
    x = _data(2 * CHUNK * 2 + 300, 7)
    for bits in BITS:
        _check(x, bits, "group", group_size=2 * CHUNK)  # groups over a chunk: span kernel
        _check(x, bits, "tensor", rounding="stochastic")  # min/max only; portable codes
        rows = x.reshape(4, -1)[:, :1024].reshape(4, 16, 64)
        _check(rows, bits, "channel", rounding="stochastic")


def test_non_contiguous(kernel):
    m = _data(96 * 257, 8).reshape(96, 257)
    for bits in BITS:
        _check(m.t(), bits, "tensor")
        _check(m[:, 1:257].reshape(96, 4, 64).transpose(0, 1), bits, "channel", channel_dim=0)
        _check(m.t(), bits, "channel", channel_dim=1)
    base = _data(CHUNK + 129, 9)
    _check(base[1:], 8, "tensor")  # data pointer 4 bytes past a 64-byte boundary
    _check(base.half()[1:], 4, "tensor")


SPECIALS = [float("nan"), float("inf"), float("-inf")]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_non_finite_and_degenerate(kernel, dtype):
    # Per tensor: one special value at positions that hit the 4-vector loop, the 16-element loop
    # and the masked tail of the min/max, in one chunk and in a later one.
    n = 2 * CHUNK + 64 + 16 + 5
    for pos in (0, 63, CHUNK + 17, n - 20, n - 1):
        for v in SPECIALS:
            x = _data(n, 10)
            x[pos] = v
            for bits in BITS:
                _check(x.to(dtype), bits, "tensor")
    # Per channel: specials in some channels only, degenerate channels beside them.
    x = _data(4 * 8 * 128, 11).reshape(4, 8, 128)
    x[1, 2, 5] = float("nan")
    x[3, 4, 127] = float("inf")
    x[0, 5, 64] = float("-inf")
    x[:, 0] = 3.25  # constant
    x[:, 1] = 0.0
    x[:, 6] = torch.tensor([0.0, -0.0]).repeat(64)
    x[:, 7] = torch.randn(4, 128) * 1e-42  # subnormal range: scale below FLT_MIN
    for bits in BITS:
        _check(x.to(dtype), bits, "channel")
        _check(x.to(dtype)[:, :, :100], bits, "channel")  # rows of 100: portable
    big = torch.tensor([-3e38, 3e38]).repeat(CHUNK)  # range overflows float32: invalid
    for bits in BITS:
        _check(big, bits, "tensor")


def test_kernel_reported_for_tensor_and_channel():
    want = "avx512" if AVX512 else "portable"
    act = torch.zeros(64, 128, 16, 16)
    assert ops.cpu_kernel(act, QuantConfig(granularity="tensor")) == want
    assert ops.cpu_kernel(act, QuantConfig(granularity="channel")) == want  # rows of 256
    assert ops.cpu_kernel(act, QuantConfig(granularity="channel", channel_dim=-1)) == "portable"
    assert ops.cpu_kernel(act[..., :15], QuantConfig(granularity="channel")) == "portable"
    assert ops.cpu_kernel(act, QuantConfig(granularity="tensor", rounding="stochastic")) == (
        "portable"
    )
    assert ops.cpu_kernel(torch.zeros(64, 128), QuantConfig(granularity="tensor")) == "portable"
    with ops.use_cpu_kernel("portable"):
        assert ops.cpu_kernel(act, QuantConfig(granularity="tensor")) == "portable"
