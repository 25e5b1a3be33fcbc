"""quantize / dequantize throughput against a memcpy of the same bytes, measured in the same run.

Per-group (128) quantization at 2/4/8 bits, on a typical activation (64x128x16x16 fp32) and on a
DRAM-sized tensor (256 MiB fp32), on the CPU and (when present) CUDA. ``extra_info`` holds GB/s,
the memcpy roofline ratio (``anchor``), and, beside the 8-bit runs, the same-run times of
``torch.quantize_per_tensor`` (8-bit only, scale precomputed: no min/max search) and of the eager
reference ``hierbench.ops.reference.quantize``. The ratio to ``torch.quantize_per_tensor`` is
given twice: of medians, and paired (median of back-to-back ratios; the one to quote on a shared
machine). The speed-up over the reference is paired too: reference and kernel warmed up alike and
timed back to back over the same rounds (``speedup_vs_reference_rounds``), never one cold call.
On the CPU, ``cpu_kernel`` names the kernel that ran (``avx512`` or ``portable``,
:func:`hierbench.ops.cpu_kernel`); ``test_quantize_portable`` times the portable loops on the
activation as well, and ``test_quantize_16bit_input`` the activation held in fp16 / bf16.

``test_quantize_granularity`` times per-tensor and per-channel quantization (8 and 4 bits) on the
same two tensors, each beside the portable loops (paired) and, at 8 bits, quantize_per_tensor.

Roofline (``roofline_ratio*``, see ``benchmarks/conftest.py``, stated in every JSON's
``extra_info["roofline_definition"]``): bytes moved = input bytes read (numel * itemsize) + output
bytes written (payload + 8 bytes of scale and offset per group); the anchor copies half that many
bytes (``dst.copy_(src)`` reads and writes each byte once: the same bytes moved); ratio = copy time
/ op time, so 1.0 means the op moves its bytes as fast as a copy does. A roofline that copies the
input bytes instead (moving twice the input) is larger, so its ratios read lower.

The kernels are timed through the raw ops (``torch.ops.hierbench.*.out``, preallocated outputs);
``test_quantize_public_api`` times the Python wrapper (argument checks, NaN check, dataclass).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from benchmarks.anchors import paired_ratio, paired_times, time_median
from hierbench import _ext, ops
from hierbench.ops import QuantConfig, quantize, reference

SHAPES = {
    "activation_64x128x16x16": (64, 128, 16, 16),
    "dram_256MiB": (64 * 1024 * 1024,),
}
GROUP = 128
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    if request.param == "cuda" and not (
        torch.cuda.is_available() and _ext.build_info()["with_cuda"]
    ):
        pytest.skip("no CUDA device or extension built without CUDA")
    return request.param


def _synced(fn, device):
    """fn, followed by a device synchronisation on CUDA (so the timer sees the kernel)."""
    if device != "cuda":
        return fn

    def run():
        fn()
        torch.cuda.synchronize()

    return run


def _input(shape, device):
    return torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)


def _qpt_call(x, device):
    """torch.quantize_per_tensor with a precomputed scale (the caller's min/max not timed)."""
    scale = float(x.abs().max()) / 127

    def call():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # quantized dtypes are deprecated in torch 2.14
            return torch.quantize_per_tensor(x, scale, 0, torch.qint8)

    # warm-up: the first quantized-tensor calls of a session are slow (lazy initialisation)
    for _ in range(5):
        call()
    return _synced(call, device)


def _with_kernel(name, fn):
    """fn, to be called with the CPU kernel ``name`` selected (then the previous one again)."""

    def run():
        with ops.use_cpu_kernel(name):
            return fn()

    return run


def _quantize_call(x, bits, device):
    p, s, o = torch.ops.hierbench.quantize(x, bits, "group", GROUP, 1, "nearest", 0)
    op = torch.ops.hierbench.quantize.out
    call = _synced(
        lambda: op(x, bits, "group", GROUP, 1, "nearest", 0, payload=p, scale=s, offset=o), device
    )
    return call, p.numel() + s.numel() * 8


def _bench_quantize(benchmark, anchor, device, shape_name, bits):
    x = _input(SHAPES[shape_name], device)
    call, out_bytes = _quantize_call(x, bits, device)
    benchmark.group = f"quantize/{shape_name}/{device}"
    benchmark.extra_info.update(shape=list(x.shape), dtype="float32", bits=bits, group=GROUP)
    if device == "cpu":  # the kernel that ran (the 256 MiB tensor is beyond the AVX-512 one's)
        cfg = QuantConfig(bits=bits, group_size=GROUP)
        benchmark.extra_info["cpu_kernel"] = ops.cpu_kernel(x, cfg)
    benchmark(call)
    anchor(benchmark, x.numel() * 4, out_bytes, device, fn=call)
    median = benchmark.stats.stats.median
    if bits == 8:
        qpt = _qpt_call(x, device)
        benchmark.extra_info["quantize_per_tensor_s"] = time_median(qpt, device=device)
        benchmark.extra_info["time_ratio_vs_quantize_per_tensor"] = (
            median / benchmark.extra_info["quantize_per_tensor_s"]
        )
        # The same ratio from back-to-back pairs (see anchors.paired_ratio): the figure to quote
        # on a shared machine.
        benchmark.extra_info["time_ratio_vs_quantize_per_tensor_paired"] = paired_ratio(
            call, qpt, device, rounds=31
        )
    return x, call


def _speedup_vs_reference(benchmark, ref, call, device, large: bool) -> None:
    """The eager reference against the kernel, timed alike (:func:`benchmarks.anchors.
    paired_times`): one warm-up call each, then the same rounds, the two back to back in each.
    ``speedup_vs_reference`` is the median of the per-round ratios; ``reference_s`` and
    ``kernel_s_paired`` the medians of the two over those rounds. 5 rounds on the 256 MiB tensor
    (the reference takes seconds there), 15 on the activation."""
    t = paired_times(ref, call, device, rounds=5 if large else 15)
    benchmark.extra_info.update(
        reference_s=t["fn_s"],
        kernel_s_paired=t["other_s"],
        speedup_vs_reference=t["ratio_paired"],
        speedup_vs_reference_rounds=t["rounds"],
    )


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_quantize(benchmark, anchor, device, shape_name, bits):
    x, call = _bench_quantize(benchmark, anchor, device, shape_name, bits)
    if bits == 8:
        ref = _synced(lambda: reference.quantize(x, bits, "group", GROUP, 1), device)
        _speedup_vs_reference(benchmark, ref, call, device, large=x.numel() > 1 << 24)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("device", ["cpu"])
def test_quantize_16bit_input(benchmark, anchor, device, dtype):
    """8-bit quantize of the activation held in fp16 / bf16 (mixed-precision training), with the
    time relative to the portable loops on the same input (paired) in ``extra_info``."""
    x = _input(SHAPES["activation_64x128x16x16"], device).to(getattr(torch, dtype))
    call, out_bytes = _quantize_call(x, 8, device)
    benchmark.group = f"quantize/activation_64x128x16x16/{device}"
    benchmark.extra_info.update(shape=list(x.shape), dtype=dtype, bits=8, group=GROUP)
    benchmark.extra_info["cpu_kernel"] = ops.cpu_kernel(x, QuantConfig(bits=8, group_size=GROUP))
    benchmark(call)
    anchor(benchmark, x.numel() * x.element_size(), out_bytes, device, fn=call)
    benchmark.extra_info["time_ratio_vs_portable_paired"] = paired_ratio(
        call, _with_kernel("portable", call), device, rounds=31
    )


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("shape_name", ["activation_64x128x16x16"])
@pytest.mark.parametrize("device", ["cpu"])
def test_quantize_portable(benchmark, anchor, device, shape_name, bits):
    """The same op on the activation with the portable CPU loops instead of the AVX-512 kernel
    (``hierbench.ops.set_cpu_kernel``): what a CPU without AVX-512 VBMI runs, same bits."""
    _with_kernel("portable", lambda: _bench_quantize(benchmark, anchor, device, shape_name, bits))()


# Per-tensor and per-channel views of the same data: channel_dim 1 of (64, 128, 16, 16) (rows of
# 256 contiguous elements) and of the 256 MiB tensor viewed as (64, 1024, 1024).
GRAN_SHAPES = {
    "activation_64x128x16x16": (64, 128, 16, 16),
    "dram_256MiB": (64, 1024, 1024),
}


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("granularity", ["tensor", "channel"])
@pytest.mark.parametrize("shape_name", list(GRAN_SHAPES))
@pytest.mark.parametrize("device", ["cpu"])
def test_quantize_granularity(benchmark, anchor, device, shape_name, granularity, bits):
    """Per-tensor and per-channel quantize (two passes: min/max, then codes) against the memcpy
    roofline, with the time relative to the portable loops on the same input (paired:
    ``time_ratio_vs_portable_paired``) and, at 8 bits, to ``torch.quantize_per_tensor``."""
    x = _input(GRAN_SHAPES[shape_name], device)
    p, s, o = torch.ops.hierbench.quantize(x, bits, granularity, GROUP, 1, "nearest", 0)
    op = torch.ops.hierbench.quantize.out

    def call():
        return op(x, bits, granularity, GROUP, 1, "nearest", 0, payload=p, scale=s, offset=o)

    benchmark.group = f"quantize-{granularity}/{shape_name}/{device}"
    benchmark.extra_info.update(
        shape=list(x.shape), dtype="float32", bits=bits, granularity=granularity, channel_dim=1
    )
    cfg = QuantConfig(bits=bits, granularity=granularity)
    benchmark.extra_info["cpu_kernel"] = ops.cpu_kernel(x, cfg)
    benchmark(call)
    anchor(benchmark, x.numel() * 4, p.numel() + s.numel() * 8, device, fn=call)
    benchmark.extra_info["time_ratio_vs_portable_paired"] = paired_ratio(
        call, _with_kernel("portable", call), device, rounds=15
    )
    if bits == 8:
        benchmark.extra_info["time_ratio_vs_quantize_per_tensor_paired"] = paired_ratio(
            call, _qpt_call(x, device), device, rounds=15
        )


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_dequantize(benchmark, anchor, device, shape_name, bits):
    x = _input(SHAPES[shape_name], device)
    p, s, o = torch.ops.hierbench.quantize(x, bits, "group", GROUP, 1, "nearest", 0)
    out = torch.empty_like(x)
    shape = list(x.shape)
    benchmark.group = f"dequantize/{shape_name}/{device}"
    benchmark.extra_info.update(shape=shape, dtype="float32", bits=bits, group=GROUP)
    op = torch.ops.hierbench.dequantize.out
    call = _synced(lambda: op(p, s, o, shape, bits, "group", GROUP, 1, out=out), device)
    benchmark(call)
    anchor(benchmark, p.numel() + s.numel() * 8, x.numel() * 4, device, fn=call)
    if bits == 8 and x.numel() <= 1 << 24:
        ref = _synced(lambda: reference.dequantize(p, s, o, shape, bits, "group", GROUP, 1), device)
        _speedup_vs_reference(benchmark, ref, call, device, large=False)


@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_torch_quantize_per_tensor(benchmark, anchor, device, shape_name):
    """The anchor of the 8-bit rows: torch's 8-bit quantization, scale given (no min/max)."""
    x = _input(SHAPES[shape_name], device)
    scale = float(x.abs().max()) / 127
    benchmark.group = f"quantize/{shape_name}/{device}"
    benchmark.extra_info.update(shape=list(x.shape), dtype="float32", bits=8, group=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        benchmark(_synced(lambda: torch.quantize_per_tensor(x, scale, 0, torch.qint8), device))
    anchor(benchmark, x.numel() * 4, x.numel(), device)


def test_quantize_public_api(benchmark, anchor, device):
    """hierbench.ops.quantize(x, cfg, out=q) on the activation: the kernel plus Python costs."""
    x = _input(SHAPES["activation_64x128x16x16"], device)
    cfg = QuantConfig(bits=8, group_size=GROUP)
    q = quantize(x, cfg)
    benchmark.group = f"quantize/activation_64x128x16x16/{device}"
    benchmark.extra_info.update(shape=list(x.shape), dtype="float32", bits=8, group=GROUP)
    benchmark(_synced(lambda: quantize(x, cfg, out=q), device))
    anchor(benchmark, x.numel() * 4, q.nbytes, device)


def test_reference_quantize(benchmark, anchor, device):
    """The eager pure-PyTorch reference on the activation (the large tensor: see extra_info)."""
    x = _input(SHAPES["activation_64x128x16x16"], device)
    benchmark.group = f"quantize/activation_64x128x16x16/{device}"
    benchmark.extra_info.update(shape=list(x.shape), dtype="float32", bits=8, group=GROUP)
    benchmark.pedantic(
        _synced(lambda: reference.quantize(x, 8, "group", GROUP, 1), device),
        rounds=5,
        warmup_rounds=1,
    )
    anchor(benchmark, x.numel() * 4, x.numel() + x.numel() // GROUP * 8, device)
