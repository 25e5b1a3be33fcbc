"""hierbench.codec.reference_decoder, the torch-free decoder: it imports and decodes with torch
blocked, and agrees with ActivationCodec.decode bit for bit on every configuration (bit widths,
granularities, dtypes, rounding modes, zstd on/off, odd shapes, one element, 0-d, empty), on
every cast between wire and output dtype (all float16 / bfloat16 bit patterns, a sweep of float32
ones), on hand-made frames with extreme scales, and on fuzzed frames (same verdict, same bits)."""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hierbench.codec import ActivationCodec, CodecConfig, decode
from hierbench.codec import reference_decoder as ref
from hierbench.errors import CodecError
from hierbench.ops import QuantConfig
from tests.test_codec import RAW_SPECS, bits_of, pack, rewrite, sample_inputs, unpack
from tests.test_codec_fuzz import MAX_FRAME_SIZE, Mutator, sample_frames

REPO = Path(__file__).resolve().parents[1]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_CODE = {torch.float32: 1, torch.float16: 2, torch.bfloat16: 3}
GRANULARITIES = [
    ("tensor", 128, 1),
    ("channel", 128, 0),
    ("channel", 128, 1),
    ("channel", 128, -1),
    ("group", 32, 1),
    ("group", 64, 1),
    ("group", 128, 1),
    ("group", 256, 1),
    ("group", 1024, 1),
]


def codec_bits(y: torch.Tensor) -> np.ndarray:
    b = bits_of(y).numpy()
    return b.view(np.uint32 if b.itemsize == 4 else np.uint16)


def assert_same(frame: bytes, what: str = "") -> np.ndarray:
    """Both decoders give the same dtype, shape and bits; returns the bits."""
    y = decode(frame)
    d = ref.decode_bits(frame)
    assert d.dtype == str(y.dtype).removeprefix("torch."), what
    assert d.bits.shape == tuple(y.shape), what
    want = codec_bits(y)
    assert d.bits.dtype == want.dtype and np.array_equal(d.bits, want), what
    return want


def inputs(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    more = {
        "big_odd": (torch.randn(3, 129, 7, generator=g) * 50).to(dtype),
        "wide_range": (torch.randn(2, 300, generator=g) * 1e4).to(dtype),
        "tiny": (torch.randn(4, 40, generator=g) * 1e-6).to(dtype),
        "constant": torch.full((5, 33), -1.5, dtype=dtype),
        "zeros_and_neg_zeros": torch.tensor([0.0, -0.0] * 40, dtype=dtype).view(2, 40),
    }
    return {**sample_inputs(dtype), **more}


# -- torch-free ---------------------------------------------------------------------------------
def test_imports_and_decodes_with_torch_blocked(tmp_path):
    """With torch, the native extension and hierbench.ops unimportable, the reference decoder
    imports and decodes frames of every scheme (version 1 and 2) to the codec's bits."""
    cases = []
    for name, frame, want in [*_v1_cases(), *_v2_cases()]:
        cases.append({"name": name, "frame": frame.hex(), "bits": want.tobytes().hex()})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    code = f"""
import json, sys
for blocked in ("torch", "hierbench._C", "hierbench.ops"):
    sys.modules[blocked] = None
from hierbench.codec import reference_decoder as ref
for case in json.load(open({str(tmp_path / "cases.json")!r})):
    d = ref.decode_bits(bytes.fromhex(case["frame"]))
    assert d.bits.tobytes().hex() == case["bits"], case["name"]
    ref.decode(bytes.fromhex(case["frame"]))
loaded = [m for m, v in sys.modules.items() if v is not None]
assert not any(m == "torch" or m.startswith("torch.") for m in loaded), "torch was imported"
print(len(json.load(open({str(tmp_path / "cases.json")!r}))), "ok")
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == f"{len(cases)} ok", out.stderr


def _v1_cases():
    doc = json.loads((REPO / "tests" / "data" / "frames_v1.json").read_text())
    for f in doc["frames"]:
        frame = bytes.fromhex(f["frame"])
        yield f["name"], frame, codec_bits(decode(frame))


def _v2_cases():
    x = torch.relu(torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(2)))
    for spec in ("raw", "fp16+zstd1", "bf16+sparse", "q8", "q4+zstd1", "q2"):
        for dtype in DTYPES:
            frame = ActivationCodec(spec).encode(x.to(dtype), seed=4)
            yield f"{spec}/{dtype}", frame, codec_bits(decode(frame))


# -- every configuration ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_quantized_frames_bit_identical(bits, dtype):
    checked = 0
    for gran, gs, cd in GRANULARITIES:
        for rounding in ("nearest", "stochastic"):
            qc = QuantConfig(bits, gran, gs, cd, rounding)
            for zstd in (None, 1, "lz4"):
                stage = {"lz4": True} if zstd == "lz4" else {"zstd_level": zstd}
                codec = ActivationCodec(CodecConfig(f"q{bits}", quant=qc, **stage))
                for name, x in inputs(dtype).items():
                    if gran == "channel" and not -x.dim() <= cd < x.dim():
                        continue
                    assert_same(codec.encode(x, seed=checked - 50), f"{qc} {zstd} {name}")
                    checked += 1
    assert checked > 500


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("spec", [*RAW_SPECS, "bf16+sparse+zstd1", "fp32+zstd1", "fp16+zstd-1"])
def test_raw_frames_bit_identical(spec, dtype):
    codec = ActivationCodec(spec)
    specials = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 1e-30, 7e4] * 13)
    for name, x in {**inputs(dtype), "specials": specials.to(dtype)}.items():
        assert_same(codec.encode(x), f"{spec} {name}")


# -- casts --------------------------------------------------------------------------------------
def _raw_frame(wire_bits: np.ndarray, wire: torch.dtype, dtype: torch.dtype) -> bytes:
    """A hand-made (valid) raw frame: these wire bit patterns, decoded as ``dtype``."""
    h = {
        "magic": b"HBAC",
        "version": 2,
        "flags": 0,
        "dtype": DTYPE_CODE[dtype],
        "scheme": 0,
        "wire": DTYPE_CODE[wire],
        "bits": 0,
        "granularity": 0,
        "rounding": 0,
        "coder": 0,
        "reserved": 0,
        "group_size": 0,
        "channel_dim": 0,
        "seed": 0,
        "aux_len": 0,
        "payload_len": wire_bits.nbytes,
        "body_len": wire_bits.nbytes,
    }
    return pack(h, (wire_bits.size,), wire_bits.tobytes())  # the host is little-endian


def _float32_sweep() -> np.ndarray:
    """~280k float32 patterns: a stride through all 2^32, plus every rounding edge of float16
    and bfloat16 (halfway points and their neighbours, overflow, subnormals, NaN payloads)."""
    sweep = np.arange(0, 2**32, 30011, dtype=np.uint64).astype(np.uint32)
    edges = []
    for top in range(0, 1 << 16, 7):  # around every 7th bfloat16 value: ties and neighbours
        base = top << 16
        edges += [base + 0x7FFF, base + 0x8000, base + 0x8001]
    f16 = np.arange(0, 1 << 16, 5, dtype=np.uint32).astype(np.uint16).view(np.float16)
    f16 = f16.astype(np.float32).view(np.uint32)  # float16 values as float32, then +-1/2 ulp
    edges = np.array(edges, dtype=np.uint64).astype(np.uint32)
    special = np.array(
        [0x477FF000, 0x477FEFFF, 0x477FF001, 0x33000000, 0x33000001, 0x7F800001, 0xFFC12345],
        dtype=np.uint32,
    )
    return np.concatenate([sweep, edges, f16, f16 + 0x1000, f16 - 0x1000, special])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_float32_wire_to_narrow_dtype(dtype):
    bits = assert_same(_raw_frame(_float32_sweep(), torch.float32, dtype))
    # spot checks against the spec's rules, independent of both decoders
    got = dict(zip(_float32_sweep()[-7:].tolist(), bits[-7:].tolist(), strict=True))
    if dtype == torch.float16:
        assert got[0x477FF000] == 0x7C00  # 65520 rounds to inf
        assert got[0x477FEFFF] == 0x7BFF  # just below: 65504
        assert got[0x33000000] == 0x0000  # 2^-25, a tie, rounds to even (0)
        assert got[0x33000001] == 0x0001  # just above: the smallest subnormal
    assert got[0x7F800001] == got[0xFFC12345] == (0x7E00 if dtype == torch.float16 else 0x7FC0)


@pytest.mark.parametrize("wire", [torch.float16, torch.bfloat16], ids=str)
def test_every_narrow_pattern_to_every_dtype(wire):
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    for dtype in DTYPES:
        bits = assert_same(_raw_frame(every, wire, dtype), f"{wire} -> {dtype}")
        if dtype == wire:
            assert np.array_equal(bits, every)  # no cast: every pattern kept, NaNs included


# -- hand-made quantized frames -----------------------------------------------------------------
def test_extreme_scales_and_offsets():
    """Frames the encoder would not write (huge, tiny, -0 scales; offsets near the float32
    limit): both decoders agree, refusing the same ones (a group that would decode to inf) and
    decoding the others to the same bits, float16 subnormals included."""
    rng = np.random.default_rng(3)
    x = torch.randn(4, 64)
    verdicts = {"refused": 0, "decoded": 0}
    for dtype in DTYPES:
        for bits in (8, 4, 2):
            frame = ActivationCodec(CodecConfig(f"q{bits}", quant=QuantConfig(bits, group_size=32)))
            frame = frame.encode(x.to(dtype))
            h, shape, _ = unpack(frame)
            groups = h["aux_len"] // 8
            for trial in range(30):
                exponents = rng.integers(-149, 128, size=2 * groups)
                params = (rng.random(2 * groups) * 2.0**exponents).astype(np.float32)
                params[groups:] *= rng.choice([-1, 1], size=groups).astype(np.float32)
                params[:groups][rng.random(groups) < 0.1] = -0.0
                params[groups:][rng.random(groups) < 0.1] = np.float32(3.4e38) * (-1) ** trial
                aux = params.astype("<f4").tobytes()
                payload = rng.integers(0, 256, size=h["payload_len"], dtype=np.uint8).tobytes()
                frame = pack(h, shape, aux + payload)
                try:
                    decode(frame)
                except CodecError as exc:
                    assert "decodes to inf" in str(exc), exc
                    with pytest.raises(CodecError, match="decodes to inf"):
                        ref.decode_bits(frame)
                    verdicts["refused"] += 1
                    continue
                assert_same(frame, f"{dtype} q{bits} trial {trial}")
                verdicts["decoded"] += 1
    assert verdicts["refused"] > 50 and verdicts["decoded"] > 50, verdicts


@pytest.mark.parametrize(
    ("dtype", "offset", "scale", "refused"),
    [
        (torch.float32, 3.0e38, 1.0e37, True),  # 255 x 1e37 already overflows float32
        (torch.float32, 1.0e38, 1.0e36, True),  # the product is finite, the sum is not
        (torch.float32, -3.0e38, 1.3e36, False),  # a product of 3.3e38: finite, near the limit
        (torch.float32, 1.0e30, 1.0e30, False),
        (torch.float16, 6.0e4, 100.0, True),  # 85,500 rounds to inf in float16
        (torch.float16, -7.0e4, 0.0, True),  # code 0 already decodes to -inf in float16
        (torch.float16, -6.5e4, 1.0, False),
        (torch.bfloat16, 3.0e38, 1.57e35, True),  # 3.4004e38: float32, past the largest bf16
        (torch.bfloat16, 1.0e38, 1.0e35, False),
    ],
)
def test_frames_whose_scales_overflow_on_decode_are_refused(dtype, offset, scale, refused):
    """Issue 15, item 9: a frame whose scale and offset would make a value decode to +-inf (in
    float32 or in its dtype) is refused by both decoders (before: both returned inf); the same
    frame with a range that stays finite decodes, to the same bits in both."""
    frame = ActivationCodec(CodecConfig("q8", quant=QuantConfig(8))).encode(
        torch.randn(2, 16).to(dtype)
    )
    h, shape, _ = unpack(frame)
    assert h["aux_len"] == 8  # one group: its scale, then its offset
    aux = struct.pack("<ff", scale, offset)
    payload = bytes([0, 255]) * (h["payload_len"] // 2)  # both ends of the code range
    frame = pack(h, shape, aux + payload)
    if refused:
        with pytest.raises(CodecError, match="scales: group 0 decodes to inf"):
            decode(frame)
        with pytest.raises(CodecError, match="decodes to inf"):
            ref.decode_bits(frame)
    else:
        bits = assert_same(frame, f"{dtype} {offset} {scale}")
        assert np.isfinite(ref._to_float32(bits, str(dtype).removeprefix("torch."))).all()


# -- invalid frames -----------------------------------------------------------------------------
def test_same_verdict_on_fuzzed_frames():
    """Mutated frames (the fuzzer's mutations): both decoders reject the same frames with a
    CodecError, and decode the others to the same bits."""
    rng = random.Random(16)
    mutator = Mutator(rng, sample_frames())
    outcomes = {"rejected": 0, "decoded": 0}
    for it in range(3000):
        kind, data, _ = mutator.mutate()
        try:
            y = decode(data, max_frame_size=MAX_FRAME_SIZE)
        except CodecError:
            with pytest.raises(CodecError):
                ref.decode_bits(data, max_frame_size=MAX_FRAME_SIZE)
            outcomes["rejected"] += 1
            continue
        d = ref.decode_bits(data, max_frame_size=MAX_FRAME_SIZE)
        assert np.array_equal(d.bits, codec_bits(y)), f"iteration {it} ({kind}): {data.hex()}"
        outcomes["decoded"] += 1
    assert outcomes["rejected"] > 1000 and outcomes["decoded"] > 50, outcomes


def test_errors_and_api():
    frame = ActivationCodec("q4").encode(torch.randn(3, 40))
    with pytest.raises(TypeError, match="bytes"):
        ref.decode("not a frame")
    with pytest.raises(CodecError, match="crc32"):
        ref.decode(frame[:-1] + bytes([frame[-1] ^ 1]))
    with pytest.raises(CodecError, match="version: 3"):
        ref.decode(rewrite(frame, version=3))
    with pytest.raises(CodecError, match="entropy coder: unknown code 3"):
        ref.decode(rewrite(frame, coder=3))
    with pytest.raises(CodecError, match="lz4"):
        ref.decode(rewrite(frame, coder=2))  # an uncompressed body is not an LZ4 block of it
    with pytest.raises(CodecError, match="max_frame_size"):
        ref.decode(frame, max_frame_size=100)
    h = ref.read_header(frame)
    assert (h.version, h.wire, h.granularity, h.group_size, h.groups) == (2, "q4", "group", 128, 1)
    x = torch.randn(2, 3).to(torch.bfloat16)
    got = ref.decode(ActivationCodec().encode(x))
    assert got.dtype == np.float32 and np.array_equal(got, x.float().numpy())
    half = ref.decode(ActivationCodec().encode(x.half()))
    assert half.dtype == np.float16 and np.array_equal(half, x.half().numpy())
    assert ref.decode(bytearray(frame)).shape == (3, 40)
    assert ref.decode(memoryview(frame)).dtype == np.float32
    assert struct.unpack_from("<B", frame, 4)[0] == 2


def test_readme_kernel_api_snippet_runs():
    """The README's "Kernel API: conventions" example runs as printed."""
    text = (REPO / "README.md").read_text()
    section = text.split("### Kernel API: conventions", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})
