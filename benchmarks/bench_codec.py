"""ActivationCodec throughput and compression ratio on real activations, one thread.

Input: torchvision ResNet-18 (CIFAR stem: 3x3 conv, no max-pool; random weights, BatchNorm in
training mode) on 64 real CIFAR-10 training images; the cuts ``layer2`` (64x128x16x16, 8 MiB of
fp32) and ``layer3`` (64x256x8x8, 4 MiB). Throughput is MB/s **of fp32 input bytes** (encode:
tensor -> frame; decode: frame -> tensor), with ``torch.set_num_threads(1)``: a per-core number.

``extra_info`` of every benchmark: ``input_mbps`` (the codec), ``frame_bytes``,
``compression_ratio`` (fp32 bytes / frame bytes), and two anchors timed in the same run on the
same bytes: ``memcpy_mbps`` (a copy of the input bytes) and ``zstd1_raw_mbps`` (zstd level 1 on
the raw fp32 bytes: compress for encode, decompress for decode), each with the codec's ratio to
it. The ``anchor`` fixture adds GB/s of bytes read + written and the memcpy roofline ratio.
``crc32_s`` and ``zlib_crc32_s``: the frame's CRC-32 (computed once per encode and per decode)
with :func:`hierbench.ops.crc32`, which the codec uses, and with ``zlib.crc32``, in the same run.

    pytest benchmarks/bench_codec.py --bench-save codec   # results/bench/<UTC>_..._codec.json

Set ``HIERBENCH_CIFAR10_ROOT`` to the image-folder CIFAR-10 (default: ../shared/datasets/
cifar10-jpeg next to the repository); skipped when absent.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest
import torch
import zstandard

from benchmarks.anchors import memcpy_seconds, time_median
from hierbench.codec import ActivationCodec
from hierbench.ops import crc32, quantize

REPO = Path(__file__).resolve().parents[1]
SCHEMES = [
    "fp32+zstd1",
    "fp32+sparse+zstd1",
    "q8",
    "q8+zstd1",
    "q4",
    "q4+zstd1",
    "q2+zstd1",
]
CUTS = ["layer2", "layer3"]


def _cifar_root() -> Path | None:
    root = Path(
        os.environ.get(
            "HIERBENCH_CIFAR10_ROOT", REPO.parent / "shared" / "datasets" / "cifar10-jpeg"
        )
    )
    return root if (root / "train").is_dir() else None


@pytest.fixture(scope="module")
def activations() -> dict[str, torch.Tensor]:
    """Real activations at the benchmarked cuts (see the module docstring)."""
    import torchvision
    from torchvision.io import decode_jpeg, read_file

    root = _cifar_root()
    if root is None:
        pytest.skip("real CIFAR-10 not found: set HIERBENCH_CIFAR10_ROOT")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    paths = [root / "train" / classes[i % 10] / f"{i // 10:04d}.jpg" for i in range(64)]
    images = torch.stack([decode_jpeg(read_file(str(p))) for p in paths]).float() / 255
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = torch.nn.Identity()
    model.train()
    out = {}
    with torch.no_grad():
        h = model.relu(model.bn1(model.conv1((images - mean) / std)))
        for name in ("layer1", "layer2", "layer3"):
            h = getattr(model, name)(h)
            out[name] = h.contiguous()
    return out


@pytest.fixture(autouse=True)
def _one_thread():
    """Per-core numbers: torch's intra-op pool and zstd both on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _record(benchmark, anchor, x, frame: bytes, zstd_s: float, *, decode: bool = False) -> None:
    nbytes = x.numel() * x.element_size()
    median = benchmark.stats.stats.median
    copy_s = memcpy_seconds(nbytes)
    if decode:
        anchor(benchmark, len(frame), nbytes)
    else:
        anchor(benchmark, nbytes, len(frame))
    benchmark.extra_info.update(
        shape=list(x.shape),
        input_bytes=nbytes,
        frame_bytes=len(frame),
        compression_ratio=nbytes / len(frame),
        input_mbps=nbytes / median / 1e6,
        input_mbps_best=nbytes / benchmark.stats.stats.min / 1e6,
        memcpy_mbps=nbytes / copy_s / 1e6,
        zstd1_raw_mbps=nbytes / zstd_s / 1e6,
        ratio_to_memcpy=copy_s / median,
        ratio_to_zstd1_raw=zstd_s / median,
        torch_threads=torch.get_num_threads(),
        crc32_s=time_median(lambda: crc32(frame)),
        zlib_crc32_s=time_median(lambda: zlib.crc32(frame)),
    )


@pytest.mark.parametrize("cut", CUTS)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_encode(benchmark, anchor, activations, scheme, cut):
    x = activations[cut]
    codec = ActivationCodec(scheme)
    raw = x.numpy()
    cctx = zstandard.ZstdCompressor(level=1)
    zstd_s = time_median(lambda: cctx.compress(raw), repeat=5)
    benchmark.group = f"codec-encode/{cut}"
    frame = benchmark(codec.encode, x)
    _record(benchmark, anchor, x, frame, zstd_s)
    if codec.config.is_quantized:  # where the time goes: the kernel, zstd, the rest
        q_s = time_median(lambda: quantize(x, codec.config.quant), repeat=7)
        benchmark.extra_info["quantize_mbps"] = x.numel() * 4 / q_s / 1e6
        benchmark.extra_info["quantize_s"] = q_s
        if codec.config.zstd_level is not None:  # zstd alone on the frame's body (scales + codes)
            q = quantize(x, codec.config.quant)
            body = b"".join(t.view(torch.uint8).numpy() for t in (q.scale, q.offset, q.payload))
            cz = zstandard.ZstdCompressor(level=codec.config.zstd_level)
            benchmark.extra_info["zstd_stage_s"] = time_median(lambda: cz.compress(body), repeat=5)
            benchmark.extra_info["zstd_stage_input_bytes"] = len(body)


@pytest.mark.parametrize("cut", CUTS)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_decode(benchmark, anchor, activations, scheme, cut):
    x = activations[cut]
    codec = ActivationCodec(scheme)
    frame = codec.encode(x)
    compressed = zstandard.ZstdCompressor(level=1).compress(x.numpy())
    dctx = zstandard.ZstdDecompressor()
    zstd_s = time_median(lambda: dctx.decompress(compressed), repeat=5)
    benchmark.group = f"codec-decode/{cut}"
    y = benchmark(codec.decode, frame)
    assert y.shape == x.shape
    _record(benchmark, anchor, x, frame, zstd_s, decode=True)
