"""The codec's compression stages (none / lz4 / zstd level 1) on real activations, and the link
rates where ``auto`` switches between them. One thread (per-core numbers).

Input: the real ResNet-18 activations of real CIFAR-10 of ``bench_codec.py`` (cuts ``layer2``,
``layer3``), through the wires ``fp32``, ``q8``, ``q4``. For each (cut, wire) the body of the frame
(scales, offsets, codes; or the raw values) is what the stage sees. Each stage's compress and
decompress are timed on it here (median of plain timed loops, ``anchors.time_median``) beside its
output size, and the send time of one batch through a link of rate R is

    send(stage, R) = encode_s + 8 * out_bytes / R + decode_s       (hierbench.codec.stages)

The wire's own work (quantize, dequantize, CRC) is the same for every stage and left out, so the
crossovers (``crossover_bps``: the rate where two stages' send times are equal; the faster stage
to run wins above it) do not depend on it. ``choice_at`` lists what ``auto`` picks at a grid of
rates and at the link presets (``hierbench.spec.links.PRESETS``). The pytest-benchmark timing is
the ``auto`` codec's whole encode at 100 Mbit/s (frames after the first reuse the measured
choice), beside a memcpy of the input (the ``anchor`` fixture).

    pytest benchmarks/bench_stages.py --bench-save stages
"""

from __future__ import annotations

import pytest
import torch
import zstandard

from benchmarks.anchors import time_median
from benchmarks.bench_codec import _one_thread, activations  # noqa: F401 (fixtures)
from hierbench.codec import ActivationCodec, CodecConfig
from hierbench.codec import stages as St
from hierbench.spec.links import PRESETS

CUTS = ["layer2", "layer3"]
WIRES = ["fp32", "q8", "q4"]
GRID_BPS = [10 ** (k / 4) for k in range(20, 45)]  # 100 kbit/s .. 10^11 bit/s, 4 per decade


def _body(x: torch.Tensor, wire: str) -> bytes:
    """The frame body the stage compresses: the frame without header and CRC (no stage)."""
    frame = ActivationCodec(wire).encode(x)
    ndim = x.dim()
    return frame[56 + 8 * ndim : -4]


def _stage_speeds(body: bytes) -> dict[str, St.StageSpeed]:
    n = len(body)
    cz, dz = zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor()
    z = cz.compress(body)
    lz = St.lz4_compress(body)
    return {
        "none": St.StageSpeed("none", n, n, 0.0, 0.0),
        "lz4": St.StageSpeed(
            "lz4",
            n,
            len(lz),
            time_median(lambda: St.lz4_compress(body)),
            time_median(lambda: St.lz4_decompress(lz, n)),
        ),
        "zstd1": St.StageSpeed(
            "zstd1",
            n,
            len(z),
            time_median(lambda: cz.compress(body)),
            time_median(lambda: dz.decompress(z, max_output_size=n)),
        ),
    }


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("cut", CUTS)
def test_stage_crossovers(benchmark, anchor, activations, cut, wire):  # noqa: F811
    if not St.lz4_available():
        pytest.skip("python-lz4 not installed (pip install lz4)")
    x = activations[cut]
    body = _body(x, wire)
    sp = _stage_speeds(body)
    names = list(sp)
    crossovers = {
        f"{a}|{b}": St.crossover_rate(sp[a], sp[b])
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    }
    choice_grid = [[r, St.choose_stage(sp, r)] for r in GRID_BPS]
    flips = [
        [choice_grid[i][0], choice_grid[i][1], choice_grid[i + 1][1]]
        for i in range(len(choice_grid) - 1)
        if choice_grid[i][1] != choice_grid[i + 1][1]
    ]
    presets = {
        name: [link.up_bps, St.choose_stage(sp, link.up_bps)]
        for name, link in PRESETS.items()
        if 0 < link.up_bps < float("inf")
    }
    codec = ActivationCodec(CodecConfig.parse(f"{wire}+auto", auto_link_bps=100e6))
    benchmark.group = f"stages/{cut}"
    frame = benchmark(codec.encode, x)
    anchor(benchmark, x.numel() * 4, len(frame))
    benchmark.extra_info.update(
        cut=cut,
        wire=wire,
        shape=list(x.shape),
        torch_threads=torch.get_num_threads(),
        body_bytes=len(body),
        send_time_formula="encode_s + 8 * out_bytes / link_bps + decode_s",
        stages={
            k: {
                "out_bytes": v.out_bytes,
                "ratio": v.ratio,
                "encode_s": v.encode_s,
                "decode_s": v.decode_s,
                "encode_gbps": v.in_bytes / v.encode_s / 1e9 if v.encode_s else None,
                "decode_gbps": v.in_bytes / v.decode_s / 1e9 if v.decode_s else None,
            }
            for k, v in sp.items()
        },
        crossover_bps=crossovers,
        choice_at=choice_grid,
        choice_flips=flips,
        choice_at_presets=presets,
        auto_choice_at_100mbit=codec.stage_choice,
    )
