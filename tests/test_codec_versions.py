"""Frame versions (docs/frame-format.md): version 2 stores 0 in every field a frame does not use,
so equivalent configs give identical frames; version-1 frames, committed ones written by the
version-1 encoder and generated ones for every configuration, still decode to the same bits, by
the codec and by the torch-free reference decoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hierbench.codec import FRAME_VERSION, ActivationCodec, CodecConfig, decode, read_header
from hierbench.codec import reference_decoder as ref
from hierbench.ops import QuantConfig
from tests.test_codec import bits_of, rewrite, sample_inputs, unpack

V1_FRAMES = Path(__file__).resolve().parent / "data" / "frames_v1.json"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
QUANT_CONFIGS = [
    QuantConfig(bits=b, granularity=g, group_size=gs, channel_dim=cd, rounding=r)
    for b in (8, 4, 2)
    for g, gs, cd in (
        ("tensor", 64, 0),
        ("channel", 256, -1),
        ("channel", 128, 0),
        ("group", 32, -2),
        ("group", 1024, 1),
    )
    for r in ("nearest", "stochastic")
]


def _qid(q: QuantConfig) -> str:
    return f"{q.bits}b-{q.granularity}{q.group_size}-cd{q.channel_dim}-{q.rounding}"


def _usable(qc: QuantConfig, x: torch.Tensor) -> bool:
    return qc.granularity != "channel" or -x.dim() <= qc.channel_dim < x.dim()


def _v1_of(frame: bytes, qc: QuantConfig, seed: int) -> bytes:
    """The version-1 frame of the same tensor: every config field stored, as the v1 encoder did."""
    return rewrite(
        frame, version=1, group_size=qc.group_size, channel_dim=qc.channel_dim, seed=seed
    )


def _ref_bits(frame: bytes) -> np.ndarray:
    return ref.decode_bits(frame).bits


def _codec_bits(y: torch.Tensor) -> np.ndarray:
    b = bits_of(y).numpy()
    return b.view(np.uint32 if b.itemsize == 4 else np.uint16)


@pytest.mark.parametrize("qc", QUANT_CONFIGS, ids=_qid)
def test_version_2_stores_0_in_unused_fields(qc):
    x = torch.randn(2, 3, 4, 5)
    frame = encode_with(qc, x, seed=-77)
    h, _, _ = unpack(frame)
    assert h["version"] == FRAME_VERSION == 2
    assert h["group_size"] == (qc.group_size if qc.granularity == "group" else 0)
    assert h["channel_dim"] == (qc.channel_dim % 4 if qc.granularity == "channel" else 0)
    assert h["seed"] == (-77 if qc.rounding == "stochastic" else 0)
    assert h["reserved"] == 0


def encode_with(qc: QuantConfig, x: torch.Tensor, seed: int, zstd: int | None = None) -> bytes:
    return ActivationCodec(CodecConfig(f"q{qc.bits}", quant=qc, zstd_level=zstd)).encode(
        x, seed=seed
    )


def test_equivalent_configs_give_identical_frames():
    """What a config does not use cannot change the frame: one tensor, one frame."""
    x = torch.randn(2, 6, 5, 3)
    pairs = [
        (
            QuantConfig(granularity="tensor", group_size=64, channel_dim=0),
            QuantConfig(granularity="tensor"),
        ),
        (QuantConfig(granularity="channel", channel_dim=-3), QuantConfig(granularity="channel")),
        (QuantConfig(granularity="channel", group_size=32), QuantConfig(granularity="channel")),
        (QuantConfig(group_size=64, channel_dim=-1), QuantConfig(group_size=64)),
    ]
    for a, b in pairs:
        assert encode_with(a, x, seed=5) == encode_with(b, x, seed=0), (a, b)
    stochastic = QuantConfig(rounding="stochastic")
    assert encode_with(stochastic, x, seed=5) != encode_with(stochastic, x, seed=6)


def _committed_v1():
    doc = json.loads(V1_FRAMES.read_text())
    return [(f["name"], bytes.fromhex(f["frame"]), f) for f in doc["frames"]]


def test_committed_version_1_frames_decode_to_the_stored_bits():
    frames = _committed_v1()
    assert len(frames) == 72
    kinds = set()
    for name, frame, f in frames:
        assert frame[4] == 1, name
        h = read_header(frame)
        assert h.version == 1 and list(h.shape) == f["shape"], name
        kinds.add((h.wire, h.quant.granularity if h.quant else None, h.coder, h.sparse))
        y = decode(frame)
        assert str(y.dtype) == f"torch.{f['dtype']}", name
        want = bytes.fromhex(f["decoded"])
        assert bits_of(y).reshape(-1).numpy().tobytes() == want, name
        assert _ref_bits(frame).tobytes() == want, name
        assert ref.read_header(frame).version == 1
    # the fixture covers every bit width, granularity, coder and the sparse layout
    assert {k[0] for k in kinds} >= {"q8", "q4", "q2", "fp32", "fp16", "bf16"}
    assert {k[1] for k in kinds} >= {"tensor", "channel", "group"}
    assert {k[2] for k in kinds} == {"none", "zstd"} and {k[3] for k in kinds} == {False, True}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("qc", QUANT_CONFIGS, ids=_qid)
def test_version_1_frame_of_every_configuration_decodes_like_version_2(qc, dtype):
    for name, x in sample_inputs(dtype).items():
        if not _usable(qc, x):
            continue
        for zstd in (None, 1):
            v2 = encode_with(qc, x, seed=31, zstd=zstd)
            v1 = _v1_of(v2, qc, seed=31)
            assert v1 != v2 and v1[4] == 1
            want = _codec_bits(decode(v2))
            assert np.array_equal(_codec_bits(decode(v1)), want), name
            assert np.array_equal(_ref_bits(v1), want), name
            h1 = read_header(v1)
            assert h1.quant == qc and h1.seed == 31  # version 1: fields as stored
