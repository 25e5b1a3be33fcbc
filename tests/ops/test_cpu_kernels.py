"""The two CPU quantize kernels for float32/16 and bfloat16 groups of 32-256, round to nearest.

``avx512`` (csrc/quant/quant_cpu_avx512.cpp: 16 groups at a time, a transposing shuffle tree for
the min/max, byte permutes for the packing) and ``portable`` (the compiler-vectorised loops of
quant_cpu.cpp) must both equal :func:`hierbench.ops.reference.quantize` bit for bit: on random
data, on every kind of non-finite value at every position inside a block, on degenerate ranges,
on misaligned inputs, and on sizes that leave tail groups and a partial group to the portable
loops. The rest of the suite runs with the default kernel (``avx512`` where supported), so this
file is where ``portable`` is held to the same cases on such a machine.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from hierbench import ops
from hierbench.ops import QuantConfig, reference

from .test_quant import _assert_quant_equal

pytestmark = pytest.mark.filterwarnings("ignore")

GROUPS = [32, 64, 128, 256]
BITS = [2, 4, 8]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


AVX512 = "avx512" in ops.available_cpu_kernels()
KERNELS = [
    pytest.param(
        "avx512",
        marks=pytest.mark.skipif(
            not AVX512, reason="no AVX-512 F/BW/DQ/VL/VBMI (or not GCC x86-64)"
        ),
    ),
    "portable",
]


@pytest.fixture(params=KERNELS)
def kernel(request):
    with ops.use_cpu_kernel(request.param):
        yield request.param


def _check(x, bits, gs):
    """Both kernels' result equals the reference, and the selected kernel is the one that ran."""
    args = (bits, "group", gs, 1, "nearest", 0)
    cfg = QuantConfig(bits=bits, group_size=gs)
    full_groups = x.numel() // gs
    small = x.numel() * x.element_size() <= 16 << 20
    want = ops.cpu_kernel() if full_groups >= 16 and small else "portable"
    assert ops.cpu_kernel(x, cfg) == want
    _assert_quant_equal(torch.ops.hierbench.quantize(x, *args), reference.quantize(x, *args))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("gs", GROUPS)
def test_random_data_all_sizes(kernel, gs, threads, dtype):
    g = torch.Generator().manual_seed(gs)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        # 16 groups exactly; fewer than 16 (portable loops only); blocks + 5 tail groups + a
        # partial group; enough blocks for 2+ parallel tasks (a task takes 2^16 elements); a mix
        # of scales across groups.
        many = 16 * gs * max(37, 2 * (1 << 16) // (16 * gs) + 3)
        for numel in (16 * gs, 7 * gs, 16 * 3 * gs + 5 * gs + 7, many):
            x = torch.randn(numel, generator=g) * torch.rand(numel, generator=g).exp() * 5 - 1
            for bits in BITS:
                _check(x.to(dtype), bits, gs)
    finally:
        torch.set_num_threads(prev)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_every_16_bit_pattern(kernel, dtype):
    # All 65,536 fp16 / bf16 bit patterns (subnormals, +-0, +-inf, every NaN), shuffled into 512
    # groups of 128: the widening on load must be exact, and the groups holding inf or NaN must
    # come out invalid, as in the reference.
    bits16 = torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16)
    perm = torch.randperm(1 << 16, generator=torch.Generator().manual_seed(5))
    x = bits16[perm].view(dtype)
    for bits in BITS:
        _check(x, bits, 128)
    # The same patterns without the non-finite ones (most groups valid)
    finite = x[torch.isfinite(x.float())]
    finite = finite[: finite.numel() // 128 * 128]
    for bits in BITS:
        _check(finite, bits, 128)
        _check(finite * 0.5, bits, 32)


def _bits_to_f32(v: int) -> float:
    return torch.tensor([v], dtype=torch.int64).to(torch.int32).view(torch.float32).item()


SPECIALS = {
    "nan": float("nan"),
    "+inf": float("inf"),
    "-inf": float("-inf"),
    # NaNs with payload bits: an arithmetic result would carry them into the low code byte
    "snan": _bits_to_f32(0x7F800001),
    "-nan-payload": _bits_to_f32(0xFFC000FF - (1 << 32)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("gs", GROUPS)
@pytest.mark.parametrize("what", list(SPECIALS))
def test_non_finite_at_every_position(kernel, gs, what, dtype):
    # One special value per group, at a different position in each of 32 groups (two blocks):
    # every vector of the group and both ends of it. Those groups must come out invalid (NaN
    # scale and offset, codes 0); the groups around them untouched.
    positions = sorted({0, 1, 15, 16, 17, gs // 2, gs - 17, gs - 16, gs - 2, gs - 1})
    x = torch.randn(34 * gs, generator=torch.Generator().manual_seed(1))
    bad = []
    for k, pos in enumerate(positions):
        grp = 2 * k + (k & 1)  # 0, 3, 4, 7, 8, ...: both parities, valid groups between
        x[grp * gs + pos] = SPECIALS[what]
        bad.append(grp)
    x[31 * gs + gs - 1] = SPECIALS[what]  # the last group of the second block, last element
    bad.append(31)
    x = x.to(dtype)  # NaN payloads do not survive the cast; NaN and inf do
    for bits in BITS:
        _check(x, bits, gs)
        _, s, o = torch.ops.hierbench.quantize(x, bits, "group", gs, 1, "nearest", 0)
        assert s.isnan().nonzero().flatten().tolist() == bad
        assert o.isnan().nonzero().flatten().tolist() == bad


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("gs", GROUPS)
def test_degenerate_ranges(kernel, gs, dtype):
    # Per group (16 groups = one block): constant, all zero, +0/-0 mixed, a subnormal range
    # (scale below FLT_MIN: codes 0), a range that overflows float32 (invalid), huge and tiny
    # magnitudes, +inf and -inf together, all NaN, and ordinary data between them.
    g = torch.Generator().manual_seed(2)
    rows = [
        torch.full((gs,), 3.25),
        torch.zeros(gs),
        torch.tensor([0.0, -0.0] * (gs // 2)),
        torch.randn(gs, generator=g) * 1e-42,
        torch.tensor([-3e38, 3e38] * (gs // 2)),
        torch.randn(gs, generator=g) * 1e37,
        torch.randn(gs, generator=g) * 1e-30,
        torch.tensor([float("inf"), float("-inf")] * (gs // 2)),
        torch.full((gs,), float("nan")),
        torch.full((gs,), -7.0).index_fill_(0, torch.tensor([gs - 1]), 7.0),
    ]
    rows += [torch.randn(gs, generator=g) for _ in range(16 - len(rows))]
    x = torch.cat(rows).to(dtype)  # in fp16, 3e38 and 1e37 become inf; 1e-42 becomes 0
    for bits in BITS:
        _check(x, bits, gs)


def test_misaligned_and_non_contiguous_inputs(kernel):
    base = torch.randn(16 * 128 * 3 + 1, generator=torch.Generator().manual_seed(3))
    _check(base[1:], 8, 128)  # data pointer 4 bytes past a 64-byte boundary
    _check(base.half()[1:], 4, 64)  # 2 bytes past
    _check(base.bfloat16()[1:], 2, 32)
    m = torch.randn(128, 16 * 3 + 1, generator=torch.Generator().manual_seed(4))
    _check(m.t(), 4, 32)  # transposed: made contiguous first


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_out_buffers(kernel, dtype):
    # The .out variant with preallocated (and previously filled) buffers gives the same bits.
    x = torch.randn(16 * 5 * 128 + 300, generator=torch.Generator().manual_seed(6)).to(dtype)
    for bits in BITS:
        want = reference.quantize(x, bits, "group", 128, 1)
        p = torch.full_like(want[0], 0xAB)
        s, o = torch.full_like(want[1], 7.0), torch.full_like(want[2], -7.0)
        torch.ops.hierbench.quantize.out(
            x, bits, "group", 128, 1, "nearest", 0, payload=p, scale=s, offset=o
        )
        _assert_quant_equal((p, s, o), want)


def test_selection_api():
    prev = ops.cpu_kernel()
    assert prev in ops.available_cpu_kernels()
    assert ops.available_cpu_kernels()[-1] == "portable"
    assert ops.set_cpu_kernel("portable") == prev
    assert ops.cpu_kernel() == "portable"
    ops.set_cpu_kernel(prev)
    with pytest.raises(ValueError, match="'avx512' or 'portable'"):
        ops.set_cpu_kernel("sse")
    if not AVX512:
        with pytest.raises(ValueError, match="not available"):
            ops.set_cpu_kernel("avx512")
    assert ops.cpu_kernel() == prev
    with ops.use_cpu_kernel("portable"):
        assert ops.cpu_kernel() == "portable"
        with pytest.raises(RuntimeError), ops.use_cpu_kernel(prev):
            raise RuntimeError  # restored on the way out, too
        assert ops.cpu_kernel() == "portable"
    assert ops.cpu_kernel() == prev


def test_kernel_for_an_input():
    small, big = torch.zeros(64, 128), torch.zeros(16 * 1024 * 1024 // 4 + 128)
    cfg = QuantConfig(bits=4, group_size=128)
    want = "avx512" if AVX512 else "portable"
    with ops.use_cpu_kernel("portable"):
        assert ops.cpu_kernel(small, cfg) == "portable"
    assert ops.cpu_kernel(small, cfg) == want
    assert ops.cpu_kernel(big, cfg) == "portable"  # beyond 16 MiB
    assert ops.cpu_kernel(small.half(), cfg) == want
    assert ops.cpu_kernel(big.half(), cfg) == want  # 8 MiB of fp16
    big16 = torch.zeros(16 * 1024 * 1024 // 2 + 128, dtype=torch.float16)
    assert ops.cpu_kernel(big16, cfg) == "portable"  # 16 MiB of fp16 + 256 bytes
    assert ops.cpu_kernel(small[:15], cfg) == "portable"  # 15 full groups: no block of 16
    assert ops.cpu_kernel(small[:16], cfg) == want
    assert ops.cpu_kernel(small, QuantConfig(group_size=512)) == "portable"
    assert ops.cpu_kernel(small, QuantConfig(rounding="stochastic")) == "portable"
    assert ops.cpu_kernel(small, QuantConfig(granularity="tensor")) == "portable"
    with pytest.raises(TypeError, match="both x and cfg"):
        ops.cpu_kernel(small)
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        ops.cpu_kernel(small.double(), cfg)
    with pytest.raises(ValueError, match="CPU tensors"):
        ops.cpu_kernel(small.to("meta"), cfg)


def test_environment_selects_portable_and_rejects_other_values():
    code = "from hierbench import ops; print(ops.cpu_kernel())"
    env = dict(os.environ, HIERBENCH_CPU_KERNEL="portable")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "portable"
    env["HIERBENCH_CPU_KERNEL"] = "avx2"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "HIERBENCH_CPU_KERNEL='avx2'" in out.stderr and "'portable'" in out.stderr


def test_info_names_the_kernel(capsys):
    import json

    from hierbench import cli

    assert cli.main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cpu_quant_kernel"] == ops.cpu_kernel()
    assert info["cpu_quant_kernels_available"] == list(ops.available_cpu_kernels())
