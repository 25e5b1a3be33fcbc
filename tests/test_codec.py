"""hierbench.codec: round trips (raw bit-exact, quantized == dequantize(quantize(x)), zstd
lossless), the frame format pinned by a golden frame and an independent writer, one hand-made
frame per validation rule, CodecConfig parsing, and round trips on real ResNet-18 activations of
real CIFAR-10 images (with the compression ratio of every scheme)."""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
import zstandard

from hierbench import codec as C
from hierbench.codec import ActivationCodec, CodecConfig, decode, encode, read_header
from hierbench.codec import frame as F
from hierbench.codec import sections as S
from hierbench.errors import CodecError, ConfigError
from hierbench.ops import QuantConfig, dequantize, quantize, reference

REPO = Path(__file__).resolve().parents[1]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}

# An independent reading of the spec table in docs/frame-format.md.
HEADER = struct.Struct("<4s10BH Ii q 3Q")
FIELDS = [
    "magic",
    "version",
    "flags",
    "dtype",
    "scheme",
    "wire",
    "bits",
    "granularity",
    "rounding",
    "coder",
    "ndim",
    "reserved",
    "group_size",
    "channel_dim",
    "seed",
    "aux_len",
    "payload_len",
    "body_len",
]


def unpack(frame: bytes) -> tuple[dict, tuple[int, ...], bytes]:
    """(header fields, shape, body) of a frame, read with the test's own struct."""
    h = dict(zip(FIELDS, HEADER.unpack_from(frame, 0)))
    n = h["ndim"]
    shape = struct.unpack_from(f"<{n}q", frame, 56)
    body = frame[56 + 8 * n : 56 + 8 * n + h["body_len"]]
    return h, shape, body


def pack(h: dict, shape, body: bytes, *, ndim: int | None = None, crc: int | None = None) -> bytes:
    """Build a frame from fields (any values, even invalid ones) with a correct CRC.

    ``ndim`` defaults to ``len(shape)``; give another value to make the two disagree."""
    h = {**h, "ndim": len(shape) if ndim is None else ndim}
    head = HEADER.pack(*(h[f] for f in FIELDS)) + struct.pack(f"<{len(shape)}q", *shape)
    data = head + body
    return data + struct.pack("<I", zlib.crc32(data) if crc is None else crc)


def rewrite(frame: bytes, *, shape=None, body=None, ndim=None, **fields) -> bytes:
    """A copy of ``frame`` with some header fields / the shape / the body replaced, CRC fixed."""
    h, old_shape, old_body = unpack(frame)
    h.update(fields)
    shape = old_shape if shape is None else shape
    return pack(h, shape, old_body if body is None else body, ndim=ndim)


def canonical(qc: QuantConfig, ndim: int) -> QuantConfig:
    """The config a version-2 header reads back: unused fields at their defaults, the channel dim
    normalised to [0, ndim)."""
    return QuantConfig(
        bits=qc.bits,
        granularity=qc.granularity,
        group_size=qc.group_size if qc.granularity == "group" else 128,
        channel_dim=qc.channel_dim % ndim if qc.granularity == "channel" else 1,
        rounding=qc.rounding,
    )


def bits_of(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(INT_VIEW[t.dtype])


def assert_bits_equal(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(bits_of(a), bits_of(b))


def sample_inputs(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(3, 8, 5, 7, generator=g)
    special = torch.tensor([0.0, -0.0, 1.5, -2.25, 3e-40, 65504.0])
    return {
        "odd_1d": torch.relu(torch.randn(97, generator=g)).to(dtype),
        "odd_3d": torch.randn(3, 5, 7, generator=g).to(dtype),
        "one": torch.randn(1, generator=g).to(dtype),
        "scalar_0d": torch.tensor(2.5, dtype=dtype),
        "empty": torch.empty(0, dtype=dtype),
        "empty_2d": torch.empty(2, 0, 3, dtype=dtype),
        "non_contiguous": base.to(dtype)[:, ::2, 1:, ::3],
        "channels_last": base.to(dtype).contiguous(memory_format=torch.channels_last),
        "post_relu": torch.relu(torch.randn(2, 16, 9, 9, generator=g)).to(dtype),
        "special": special.to(dtype),
    }


RAW_SPECS = [
    "raw",
    "raw+zstd1",
    "raw+sparse",
    "raw+sparse+zstd1",
    "fp32",
    "fp16+zstd3",
    "bf16",
    "fp16+sparse",
    "bf16+zstd-3",
]


# -- round trips: raw ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("spec", RAW_SPECS)
def test_raw_round_trip_is_bit_exact(spec, dtype):
    """Raw wires give back x (raw) or x cast to the wire dtype and back, bit for bit (-0.0,
    subnormals, NaN and inf included; a NaN that went through a cast comes back as the canonical
    quiet NaN, docs/frame-format.md "Casts"), in x's shape and dtype, as a contiguous, writable
    tensor."""
    codec = ActivationCodec(spec)
    wire = CodecConfig.parse(spec).wire
    inputs = sample_inputs(dtype)
    nan_inf = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0], dtype=dtype)
    inputs["nan_inf"] = nan_inf
    for name, x in inputs.items():
        y = codec.decode(codec.encode(x))
        expected = x if wire == "raw" else x.to(F._NAME_DTYPE[wire]).to(dtype)
        if wire != "raw" and F._NAME_DTYPE[wire] != dtype:  # a cast: NaN becomes canonical
            expected = expected.masked_fill(expected.isnan(), math.nan)
        assert y.is_contiguous(), name
        assert_bits_equal(y, expected.contiguous())
        y.add_(1)  # owned memory, not a view of the frame


# -- round trips: quantized ----------------------------------------------------------------------
QUANT_CONFIGS = [
    QuantConfig(bits=b, granularity=g, group_size=gs, channel_dim=cd, rounding=r)
    for b in (8, 4, 2)
    for g, gs, cd in (("group", 32, 1), ("group", 128, 1), ("tensor", 128, 1), ("channel", 64, -1))
    for r in ("nearest", "stochastic")
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "qc", QUANT_CONFIGS, ids=lambda q: f"{q.bits}b-{q.granularity}-{q.rounding}"
)
def test_quantized_round_trip_equals_dequantize_of_quantize(qc, dtype):
    """A quantized frame decodes to exactly dequantize(quantize(x, qc, seed)), with or without
    zstd, for every input of the sample set (0-d only where the granularity allows)."""
    plain = ActivationCodec(CodecConfig(wire=f"q{qc.bits}", quant=qc))
    packed = ActivationCodec(CodecConfig(wire=f"q{qc.bits}", quant=qc, zstd_level=1))
    for name, x in sample_inputs(dtype).items():
        if qc.granularity == "channel" and x.dim() == 0:
            with pytest.raises(CodecError, match="per channel"):
                plain.encode(x)
            continue
        seed = 1234 + x.numel()
        expected = dequantize(quantize(x, qc, seed=seed))
        for codec in (plain, packed):
            frame = codec.encode(x, seed=seed)
            y = codec.decode(frame)
            assert torch.equal(bits_of(y), bits_of(expected)), name
            assert y.dtype == dtype and y.shape == x.shape
            h = read_header(frame)
            want_seed = seed if qc.rounding == "stochastic" else 0
            assert (h.quant, h.seed, h.wire) == (canonical(qc, x.dim()), want_seed, f"q{qc.bits}")


def test_quantized_non_finite_input_is_a_codec_error():
    codec = ActivationCodec("q8")
    with pytest.raises(CodecError, match="non-finite"):
        codec.encode(torch.tensor([1.0, float("nan"), 2.0]))


def test_zstd_is_lossless_over_the_same_body():
    """With zstd the frame carries the same header fields and the same decompressed body."""
    x = torch.relu(torch.randn(4, 16, 8, 8, generator=torch.Generator().manual_seed(3)))
    for wire in ("raw", "fp16", "q8", "q4", "q2"):
        plain = encode(x, wire)
        packed = encode(x, f"{wire}+zstd1")
        hp, sp, bp = unpack(plain)
        hz, sz, bz = unpack(packed)
        assert zstandard.ZstdDecompressor().decompress(bz) == bp
        assert sp == sz and hz["coder"] == 1 and hp["coder"] == 0
        assert {k: v for k, v in hp.items() if k not in ("coder", "body_len")} == {
            k: v for k, v in hz.items() if k not in ("coder", "body_len")
        }
        assert torch.equal(decode(plain), decode(packed))


@pytest.mark.parametrize("spec", ["raw", "q4", "fp16+sparse"])
def test_decode_to_cuda(spec):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x = torch.relu(torch.randn(2, 3, 33))
    frame = encode(x, spec)
    y = decode(frame, device="cuda")
    assert y.device.type == "cuda"
    assert torch.equal(y.cpu(), decode(frame))
    assert encode(x.cuda(), spec) == frame  # encoding on the GPU gives the same bytes


# -- format ----------------------------------------------------------------------------------------
def test_golden_frame():
    """The exact bytes of a small frame, so readers on other stacks can check themselves."""
    golden = [
        ("48424143", "magic b'HBAC'"),
        ("02", "version"),
        ("00", "flags"),
        ("01", "dtype float32"),
        ("00", "scheme raw"),
        ("01", "wire float32"),
        ("000000", "bits, granularity, rounding"),
        ("00", "coder none"),
        ("01", "ndim"),
        ("0000", "reserved"),
        ("0000000000000000", "group size, channel dim"),
        ("0000000000000000", "seed"),
        ("0000000000000000", "aux length"),
        ("0800000000000000", "payload length"),
        ("0800000000000000", "body length"),
        ("0200000000000000", "shape (2,)"),
        ("0000803f000000c0", "1.0, -2.0"),
        ("a4d527e2", "CRC-32 of everything before"),
    ]
    frame = encode(torch.tensor([1.0, -2.0]))
    assert frame.hex() == "".join(hex_ for hex_, _ in golden)
    assert frame[-4:] == struct.pack("<I", zlib.crc32(frame[:-4]))
    assert torch.equal(
        decode(bytes.fromhex("".join(hex_ for hex_, _ in golden))), torch.tensor([1.0, -2.0])
    )


def test_header_fields_round_trip():
    x = torch.randn(2, 3, 4, 5, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    qc = QuantConfig(bits=4, granularity="channel", channel_dim=-3, rounding="stochastic")
    frame = ActivationCodec(CodecConfig("q4", quant=qc, zstd_level=5)).encode(x, seed=-7)
    h = read_header(frame)
    assert h == C.FrameHeader(
        version=2,
        dtype=torch.bfloat16,
        shape=(2, 3, 4, 5),
        wire="q4",
        quant=QuantConfig(bits=4, granularity="channel", channel_dim=1, rounding="stochastic"),
        seed=-7,
        sparse=False,
        coder="zstd",
        aux_bytes=8 * 3,
        payload_bytes=60,
        body_bytes=h.body_bytes,
    )
    assert h.frame_bytes == len(frame) and h.header_bytes == 56 + 32
    raw, shape, _ = unpack(frame)
    assert (raw["granularity"], raw["rounding"], raw["channel_dim"], raw["seed"]) == (2, 2, 1, -7)
    assert raw["group_size"] == 0  # unused by channel granularity: 0 in version 2
    assert raw["dtype"] == 3 and shape == (2, 3, 4, 5)
    sparse = read_header(encode(torch.relu(torch.randn(50)), "fp16+sparse"))
    assert sparse.sparse and sparse.wire == "fp16" and sparse.aux_bytes == 7


def test_frames_are_deterministic():
    """Same input and config: the same bytes, from the same codec, a fresh one, or encode_into."""
    x = torch.relu(torch.randn(3, 17, 9, generator=torch.Generator().manual_seed(5)))
    for spec in ("raw", "fp16+sparse+zstd1", "q8", "q4+zstd1", "q2+zstd19"):
        codec = ActivationCodec(spec)
        first = codec.encode(x, seed=3)
        assert codec.encode(x, seed=3) == first == encode(x, spec, seed=3)
        assert encode(x.transpose(0, 2).contiguous().transpose(0, 2), spec, seed=3) == first
        buf = bytearray(codec.frame_bound(x) + 10)
        n = codec.encode_into(x, buf, seed=3)
        assert bytes(buf[:n]) == first and n <= codec.frame_bound(x)
        assert codec.encode_into(x, memoryview(buf), seed=3) == n


def test_num_groups_matches_the_reference():
    for shape in [(), (0,), (5,), (2, 0, 3), (3, 200), (2, 3, 4, 5)]:
        for gran, gs, cd in (
            ("tensor", 128, 1),
            ("group", 32, 1),
            ("group", 256, 0),
            ("channel", 0, -1),
        ):
            if gran == "channel" and not shape:
                continue
            assert F._num_groups(shape, gran, gs, cd) == reference.num_groups(shape, gran, gs, cd)


def test_encode_into_small_buffer_and_readonly():
    codec = ActivationCodec("fp32")
    x = torch.randn(10)
    with pytest.raises(ValueError, match="needs 108"):
        codec.encode_into(x, bytearray(50))
    with pytest.raises(TypeError, match="writable"):
        codec.encode_into(x, bytes(200))


def test_frame_bound_holds_for_incompressible_data():
    x = torch.randn(4096)  # random mantissas: zstd can only expand
    for spec in ("raw+zstd1", "fp16+sparse+zstd22", "q8+zstd1", "q2+zstd-5"):
        codec = ActivationCodec(spec)
        assert len(codec.encode(x)) <= codec.frame_bound(x)


def test_stats_count_bytes_and_ratio():
    codec = ActivationCodec("q8")
    x = torch.randn(4, 256)
    f1 = codec.encode(x)
    f2 = codec.encode(x[:2])
    codec.decode(f1)
    s = codec.stats
    assert (s.encoded_frames, s.decoded_frames) == (2, 1)
    assert s.encoded_tensor_bytes == 4096 + 2048
    assert s.encoded_frame_bytes == len(f1) + len(f2)
    assert s.compression_ratio == pytest.approx(6144 / (len(f1) + len(f2)))
    assert s.last_ratio == pytest.approx(2048 / len(f2))
    assert (s.decoded_frame_bytes, s.decoded_tensor_bytes) == (len(f1), 4096)
    codec.reset_stats()
    assert codec.stats.encoded_frames == 0 and math.isnan(codec.stats.compression_ratio)


def test_decode_accepts_bytes_like_and_rejects_others():
    x = torch.randn(8)
    frame = encode(x, "fp16")
    for data in (frame, bytearray(frame), memoryview(frame), memoryview(bytearray(frame))):
        assert torch.equal(decode(data), x.half().float())
    assert torch.equal(decode(memoryview(frame).cast("I", (len(frame) // 4,))), x.half().float())
    for bad in ("text", [1, 2], None, torch.zeros(3)):
        with pytest.raises(TypeError):
            decode(bad)
    with pytest.raises(TypeError, match="contiguous"):
        decode(memoryview(frame + frame)[::2])


def test_encode_rejects_bad_input():
    codec = ActivationCodec()
    with pytest.raises(TypeError, match="float32"):
        codec.encode(torch.zeros(3, dtype=torch.int32))
    with pytest.raises(TypeError, match="float32"):
        codec.encode(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(TypeError, match="Tensor"):
        codec.encode([1.0, 2.0])
    with pytest.raises(CodecError, match="9-dimensional"):
        codec.encode(torch.zeros((1,) * 9))
    with pytest.raises(ValueError, match="seed"):
        ActivationCodec("q8").encode(torch.zeros(3), seed=2**63)
    small = ActivationCodec(CodecConfig(max_frame_size=1000))
    with pytest.raises(CodecError, match="max_frame_size"):
        small.encode(torch.zeros(300))
    assert len(small.encode(torch.zeros(200))) == 868


def test_raw_frames_decode_without_the_ops_package():
    """Raw frames need neither the native extension nor hierbench.ops (edge devices without
    the build still talk to the cloud): the codec checks their CRC with zlib.crc32 then."""
    code = (
        "import sys; sys.modules['hierbench.ops'] = None; sys.modules['hierbench._C'] = None\n"
        "import torch, zlib; from hierbench import codec; from hierbench.codec import frame\n"
        "x = torch.randn(3, 5)\n"
        "assert torch.equal(codec.decode(codec.encode(x, 'raw+sparse+zstd1')), x)\n"
        "assert frame._crc32_function() is zlib.crc32  # the CRC without the extension\n"
        "print('ok')"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == "ok", out.stderr


# -- CodecConfig ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "wire", "level", "sparse"),
    [
        ("fp32", "fp32", None, False),
        ("fp16", "fp16", None, False),
        ("bf16+zstd", "bf16", 1, False),
        ("q8", "q8", None, False),
        ("q4+zstd1", "q4", 1, False),
        (" Q2+ZSTD19 ", "q2", 19, False),
        ("raw+sparse+zstd-3", "raw", -3, True),
        ("fp16+zstd2+sparse", "fp16", 2, True),
    ],
)
def test_parse(spec, wire, level, sparse):
    cfg = CodecConfig.parse(spec)
    assert (cfg.wire, cfg.zstd_level, cfg.sparse) == (wire, level, sparse)
    assert CodecConfig.parse(cfg.name) == cfg
    if wire.startswith("q"):
        assert cfg.quant == QuantConfig(bits=int(wire[1:]))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("fp64", "valid choices: raw, fp32, fp16, bf16, q8, q4, q2"),
        ("q3+zstd1", "valid choices: raw, fp32"),
        ("", "unknown codec ''"),
        ("q4+brotli", r"valid choices: \+sparse, \+zstd, .*\+lz4, \+auto"),
        ("q4+zstd1+zstd2", "repeated"),
        ("q4+zstd0", "zstd_level"),
        ("q4+zstd23", "zstd_level"),
        ("q4+sparse", "raw wires only"),
        ("fp32+zstdx", "unknown codec suffix"),
    ],
)
def test_parse_errors_list_the_choices(spec, match):
    with pytest.raises(ConfigError, match=match):
        CodecConfig.parse(spec)


def test_config_validation():
    with pytest.raises(ConfigError, match="bits is 8"):
        CodecConfig("q4", quant=QuantConfig(bits=8))
    with pytest.raises(ConfigError, match="only for q8/q4/q2"):
        CodecConfig("fp16", quant=QuantConfig())
    with pytest.raises(ConfigError, match="channel_dim"):
        CodecConfig("q8", quant=QuantConfig(granularity="channel", channel_dim=9))
    with pytest.raises(ConfigError, match="max_frame_size"):
        CodecConfig(max_frame_size=10)
    with pytest.raises(ConfigError, match="sparse"):
        CodecConfig(sparse=1)
    with pytest.raises(TypeError):
        ActivationCodec(3)
    cfg = CodecConfig.parse("q4+zstd1", quant=QuantConfig(bits=4, group_size=64))
    assert cfg.quant.group_size == 64 and cfg.name == "q4+zstd1"
    assert repr(ActivationCodec(cfg)) == "ActivationCodec('q4+zstd1')"


def test_numpy_integers_in_codec_config_and_seed():
    import numpy as np

    cfg = CodecConfig(
        "q4",
        quant=QuantConfig(bits=np.int8(4)),
        zstd_level=np.int64(3),
        max_frame_size=np.int32(4096),
    )
    assert cfg == CodecConfig("q4", zstd_level=3, max_frame_size=4096)
    assert type(cfg.zstd_level) is int and type(cfg.max_frame_size) is int
    x = torch.randn(4, 40)
    codec = ActivationCodec(CodecConfig("q4", quant=QuantConfig(bits=4, rounding="stochastic")))
    assert codec.encode(x, seed=np.int64(-5)) == codec.encode(x, seed=-5)
    for bad_level in (np.float64(1), True, "1"):
        with pytest.raises(ConfigError, match="zstd_level"):
            CodecConfig(zstd_level=bad_level)
    with pytest.raises(ValueError, match="seed must be an int64"):
        codec.encode(x, seed=np.float32(1))


def test_lazy_exports():
    """hierbench.codec imports its names on first use (so that the torch-free reference decoder
    imports without torch); every public name resolves."""
    assert sorted(C.__all__) == sorted(C._EXPORTS)
    for name in C.__all__:
        assert getattr(C, name) is getattr(
            __import__(f"hierbench.codec.{C._EXPORTS[name]}", fromlist=[name]), name
        )
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        C.nope  # noqa: B018


# -- validation: one hand-made frame per rule ---------------------------------------------------
@pytest.fixture(scope="module")
def frames() -> dict[str, bytes]:
    g = torch.Generator().manual_seed(9)
    x = torch.relu(torch.randn(2, 3, 40, generator=g))
    return {
        "raw": encode(x),
        "raw_zstd": encode(x, "raw+zstd1"),
        "sparse": encode(x, "fp16+sparse"),
        "q4": encode(x, "q4"),
        "q4_zstd": encode(x, "q4+zstd1"),
        "q4_channel": encode(
            x, CodecConfig("q4", quant=QuantConfig(bits=4, granularity="channel", channel_dim=1))
        ),
        "q4_tensor": encode(x, CodecConfig("q4", quant=QuantConfig(bits=4, granularity="tensor"))),
    }


def bad(frame, match: str, **kwargs) -> None:
    with pytest.raises(CodecError, match=match):
        decode(frame, **kwargs)


def test_every_sample_frame_is_valid(frames):
    for frame in frames.values():
        decode(frame)


@pytest.mark.parametrize(
    ("name", "fields", "match"),
    [
        ("raw", {"magic": b"HBAX"}, "magic"),
        ("raw", {"version": 3}, "version: 3 is not supported"),
        ("raw", {"version": 1}, None),  # version 1: raw frames are the same
        ("raw", {"version": 0}, "version"),
        ("raw", {"flags": 0x80}, "flags: unknown bits"),
        ("raw", {"reserved": 1}, "reserved"),
        ("raw", {"dtype": 0}, "dtype: unknown code 0"),
        ("raw", {"dtype": 4}, "dtype: unknown code 4"),
        ("raw", {"scheme": 2}, "scheme: unknown code 2"),
        ("raw", {"wire": 9}, "wire dtype: unknown code 9"),
        ("raw", {"coder": 3}, "entropy coder: unknown code 3"),
        ("raw", {"bits": 8}, "bits: 8, expected 0 in a raw frame"),
        ("raw", {"granularity": 3}, "granularity: 3, expected 0"),
        ("raw", {"rounding": 1}, "rounding"),
        ("raw", {"group_size": 128}, "group size: 128, expected 0"),
        ("raw", {"channel_dim": 1}, "channel dim"),
        ("raw", {"seed": 5}, "seed: 5, expected 0"),
        ("raw", {"aux_len": 8}, "aux length"),
        ("raw", {"payload_len": 4 * 240 - 4}, "payload length"),
        ("raw", {"wire": 2}, "payload length: 960, expected 480"),
        ("raw", {"dtype": 2}, None),  # valid: any dtype can be the decoded one
        ("raw", {"body_len": 10**6}, "truncated"),
        ("raw", {"body_len": 4 * 240 - 8}, "trailing bytes"),
        ("sparse", {"aux_len": 31}, "aux length: 31, the mask of 240 elements is 30"),
        ("sparse", {"payload_len": 3}, "payload length: 3 is not a multiple of 2"),
        ("sparse", {"scheme": 1, "wire": 0, "bits": 4, "granularity": 3, "rounding": 1}, "SPARSE"),
        ("q4", {"wire": 1}, "wire dtype: 1, expected 0 in a quantized frame"),
        ("q4", {"bits": 3}, "bits: 3, expected 2, 4 or 8"),
        ("q4", {"bits": 8}, "aux length|payload length"),
        ("q4", {"granularity": 0}, "granularity: unknown code 0"),
        ("q4", {"granularity": 4}, "granularity: unknown code 4"),
        ("q4", {"rounding": 0}, "rounding: unknown code 0"),
        ("q4", {"rounding": 3}, "rounding: unknown code 3"),
        ("q4", {"group_size": 48}, "group size: 48 is not a power of two"),
        ("q4", {"group_size": 16}, "group size: 16"),
        ("q4", {"group_size": 0}, "group size: 0 is not a power of two"),
        ("q4", {"group_size": 256}, "aux length: 16, expected 8"),
        ("q4", {"channel_dim": 1}, "channel dim: 1, expected 0 for group granularity"),
        ("q4", {"channel_dim": -1}, "channel dim: -1, expected 0"),
        ("q4", {"aux_len": 8}, "aux length: 8, expected 16"),
        ("q4", {"payload_len": 121}, "payload length: 121, expected 120"),
        ("q4", {"seed": -1}, "seed: -1, expected 0 with nearest rounding"),
        ("q4", {"rounding": 2}, None),  # valid: the decoder does not care how codes were rounded
        ("q4", {"rounding": 2, "seed": -1}, None),  # valid: any int64 seed with stochastic
        ("q4_channel", {"channel_dim": 3}, r"channel dim: 3 is not in \[0, 3\)"),
        ("q4_channel", {"channel_dim": -2}, r"channel dim: -2 is not in \[0, 3\)"),
        ("q4_channel", {"channel_dim": 2}, "aux length: 24, expected 320"),
        ("q4_channel", {"group_size": 128}, "group size: 128, expected 0 for channel"),
        ("q4_tensor", {"group_size": 32}, "group size: 32, expected 0 for tensor"),
        ("q4_tensor", {"channel_dim": 2}, "channel dim: 2, expected 0 for tensor"),
        # version 1 stores every field of the config, used or not (docs/frame-format.md)
        ("q4", {"version": 1}, None),  # a group frame of version 2 is one of version 1 too
        ("q4_tensor", {"version": 1}, "group size: 0 is not a power of two"),
        ("q4", {"version": 1, "group_size": 128, "channel_dim": 8}, r"outside \[-8, 7\]"),
        ("q4", {"version": 1, "group_size": 128, "channel_dim": -8, "seed": 9}, None),
        ("q4", {"version": 1, "group_size": 48}, "group size: 48 is not a power of two"),
        ("q4_channel", {"version": 1, "group_size": 64, "channel_dim": -2}, None),
        ("q4_channel", {"version": 1, "group_size": 64, "channel_dim": -4}, "out of range"),
        ("q4_channel", {"version": 1, "group_size": 64, "channel_dim": 3}, "out of range"),
        ("q4_tensor", {"version": 1, "group_size": 32, "channel_dim": 5, "seed": 3}, None),
        ("q4_zstd", {"coder": 0}, "body length"),
        ("raw_zstd", {"payload_len": 4 * 240 + 4, "shape": (241,)}, "zstd frame declares 960"),
    ],
)
def test_header_field_rewrites(frames, name, fields, match):
    """Each header rule, hit by rewriting one field of a valid frame (CRC recomputed, so the
    field check, not the CRC, must catch it)."""
    shape = fields.pop("shape", None)
    frame = rewrite(frames[name], shape=shape, **fields)
    if match is None:
        decode(frame)
    else:
        bad(frame, match)


def test_ndim_and_shape_rules(frames):
    raw = frames["raw"]
    bad(rewrite(raw, shape=(1,) * 9), "ndim: 9 exceeds the maximum 8")
    bad(rewrite(raw, ndim=255), "ndim: 255 exceeds")
    bad(rewrite(raw, shape=(2, -3, -40)), r"shape\[1\]: -3 is negative")
    # dims whose product overflows int64 (and would make torch compute wrapped strides)
    bad(rewrite(raw, shape=(2**40, 2**40, 0)), r"shape: .* would need")
    bad(rewrite(raw, shape=(2**62, 2**62)), "over max_frame_size")
    bad(rewrite(raw, shape=(2, 3, 41)), "payload length: 960, expected 984")
    bad(rewrite(raw, shape=(240,), ndim=2), "truncated")  # the shape runs into the body
    # a big but bounded shape is refused under a small max_frame_size before allocation
    bad(rewrite(raw, shape=(2**20, 64)), "over max_frame_size 1000000", max_frame_size=10**6)
    empty = encode(torch.empty(0, 5))
    assert decode(rewrite(empty, shape=(0, 2**20))).shape == (0, 2**20)


def test_length_rules(frames):
    raw = frames["raw"]
    bad(raw[:10], "truncated: 10 bytes, the smallest frame is 60")
    bad(raw + b"\0", "1 trailing bytes")
    bad(raw + raw, "trailing bytes")
    bad(raw, "exceeds max_frame_size 100", max_frame_size=100)
    bad(b"", "truncated")


def test_truncation_at_every_offset(frames):
    for frame in frames.values():
        for n in range(len(frame)):
            bad(frame[:n], "truncated|length")


def test_crc_mismatch(frames):
    for frame in frames.values():
        for pos in (0, 5, 20, 60, len(frame) // 2, len(frame) - 5, len(frame) - 1):
            corrupt = bytearray(frame)
            corrupt[pos] ^= 0x10
            bad(bytes(corrupt), "crc32|magic|length|truncated|trailing|exceeds")
        h, shape, body = unpack(frame)
        bad(pack(h, shape, body, crc=zlib.crc32(frame[:-4]) ^ 1), "crc32: stored")


def test_zstd_body_rules(frames):
    h, shape, body = unpack(frames["raw_zstd"])
    content = h["payload_len"]

    def with_body(new_body, **fields):
        return pack({**h, "body_len": len(new_body), **fields}, shape, new_body)

    bad(with_body(b"\x00" * 16), "not a zstd frame")
    bad(with_body(body[:6]), "bad zstd frame header|zstd")
    bad(with_body(body[:-3]), "zstd")  # a truncated zstd stream
    bad(with_body(body + b"junk"), "zstd")  # data after the zstd frame
    bad(with_body(body + body), "zstd")  # two zstd frames
    # zstd content size absent: refused, nothing is decompressed
    no_size = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(content))
    bad(with_body(no_size), "does not declare its size")
    # a zstd frame declaring a huge content size (a decompression bomb) while the header
    # declares the real size: refused from the zstd frame header alone
    bomb = bytearray(zstandard.ZstdCompressor().compress(bytes(2**20)))
    bad(with_body(bytes(bomb)), f"declares {2**20} bytes, the header says {content}")
    # a zstd frame whose declared size matches the header's but whose blocks hold less:
    # compress 4 bytes fewer, then patch the 2-byte Frame_Content_Size field (value - 256)
    short = bytearray(zstandard.ZstdCompressor().compress(bytes(content - 4)))
    fhd = short[4]
    assert fhd >> 6 == 1 and fhd >> 5 & 1 and fhd & 3 == 0  # FCS 2 bytes, single segment
    struct.pack_into("<H", short, 5, content - 256)
    assert zstandard.frame_content_size(bytes(short)) == content
    bad(with_body(bytes(short)), "body: zstd")
    # empty content must have an empty body, and vice versa
    e = encode(torch.empty(0), "raw+zstd1")
    he, se, be = unpack(e)
    assert be == b""
    bad(pack({**he, "body_len": 9}, se, zstandard.ZstdCompressor().compress(b"")), "body length")


def test_huge_declared_sizes_never_allocate(frames, monkeypatch):
    """Oversize declarations are refused from the header, before zstd or torch allocate."""
    calls = []
    monkeypatch.setattr(C.ActivationCodec, "_decompress", lambda *a: calls.append(a))
    monkeypatch.setattr(S, "_tensor_from", lambda *a: calls.append(a))
    h, shape, body = unpack(frames["raw_zstd"])
    # the header claims a 2**40-element tensor (and matching payload length)
    bad(pack({**h, "payload_len": 2**42}, (2**40,), body), "shape")
    bad(pack({**h, "payload_len": 2**42, "body_len": 2**42}, (2**40,), body), "body length")
    bad(pack({**h, "aux_len": 2**60}, shape, body), "aux length")
    h4, _s4, b4 = unpack(frames["q4_zstd"])
    bad(pack({**h4, "payload_len": 2**39}, (2**40,), b4), "shape")
    # 2-bit codes of a 16x larger fp32 tensor: the decoded tensor is what is bounded
    bad(pack({**h4, "bits": 2, "payload_len": 2**28}, (2**30,), b4), "shape", max_frame_size=2**30)
    assert calls == []


def test_quantized_body_rules(frames):
    h, shape, body = unpack(frames["q4"])
    groups = h["aux_len"] // 8
    scales = bytearray(body)
    struct.pack_into("<f", scales, 0, float("nan"))
    bad(pack(h, shape, bytes(scales)), "scales: a scale or offset is NaN")
    scales = bytearray(body)
    struct.pack_into("<f", scales, 4 * groups, float("inf"))
    bad(pack(h, shape, bytes(scales)), "NaN or infinite")
    scales = bytearray(body)
    struct.pack_into("<f", scales, 0, -1.0)
    bad(pack(h, shape, bytes(scales)), "scale is negative")
    # odd numel: the last byte's high nibble is padding and must be 0
    odd = encode(torch.randn(5), "q4")
    ho, so, bo = unpack(odd)
    bad(pack(ho, so, bo[:-1] + bytes([bo[-1] | 0xF0])), "payload: unused high bits")
    assert bo[-1] >> 4 == 0


def test_sparse_body_rules():
    x = torch.tensor([0.0, 1.0, 0.0, -0.0, 2.0])
    frame = encode(x, "fp32+sparse")
    assert_bits_equal(decode(frame), x)  # -0.0 kept
    h, shape, body = unpack(frame)
    assert body[0] == 0b11010 and h["payload_len"] == 12
    bad(pack(h, shape, bytes([0b11011]) + body[1:]), "the mask marks 4 values")
    bad(pack(h, shape, bytes([0b111010]) + body[1:]), "sparse mask: unused high bits")
    bad(pack(h, shape, body[:1] + bytes(4) + body[5:]), "marks as non-zero is zero")


# -- real activations ----------------------------------------------------------------------------
CUTS = ("stem", "layer1", "layer2", "layer3", "layer4")
SCHEMES = (
    "raw",
    "fp32+zstd1",
    "fp32+sparse+zstd1",
    "fp16",
    "fp16+zstd1",
    "bf16+sparse+zstd1",
    "q8",
    "q8+zstd1",
    "q4+zstd1",
    "q2+zstd1",
)


def cifar_activations(root: Path, n: int = 64) -> dict[str, torch.Tensor]:
    """ResNet-18 (torchvision, CIFAR stem: 3x3 conv, no max-pool) activations of ``n`` real
    CIFAR-10 training images, round-robin over the classes, at every block boundary. Random
    weights, BatchNorm in training mode (batch statistics), so every cut is post-ReLU."""
    import torchvision
    from torchvision.io import decode_jpeg, read_file

    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    paths = [
        root / "train" / classes[i % len(classes)] / f"{i // len(classes):04d}.jpg"
        for i in range(n)
    ]
    images = torch.stack([decode_jpeg(read_file(str(p))) for p in paths]).float() / 255
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    x = (images - mean) / std
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = torch.nn.Identity()
    model.train()
    out = {}
    with torch.no_grad():
        h = model.relu(model.bn1(model.conv1(x)))
        out["stem"] = h
        for name in CUTS[1:]:
            h = getattr(model, name)(h)
            out[name] = h
    return out


@pytest.fixture(scope="module")
def activations(cifar10_root) -> dict[str, torch.Tensor]:
    return cifar_activations(cifar10_root)


@pytest.mark.slow
def test_real_activations_round_trip(activations, record_property):
    """Every scheme round-trips the real activations at every cut (raw bit-exact, quantized
    equal to dequantize(quantize(x))); the compression ratios are printed (-s) and recorded."""
    assert activations["layer2"].shape == (64, 128, 16, 16)
    ratios: dict[str, dict[str, float]] = {}
    for cut, x in activations.items():
        for spec in SCHEMES:
            codec = ActivationCodec(spec)
            frame = codec.encode(x)
            y = codec.decode(frame)
            cfg = codec.config
            if cfg.is_quantized:
                q = quantize(x, cfg.quant)
                expected = dequantize(q)
                err = (y - x).abs().max().item()
                # nearest rounding: within half a step of the widest group (plus fp32 rounding)
                assert err <= q.scale.max().item() * 0.5 * (1 + 1e-5) + 1e-6
            else:
                wire = x.dtype if cfg.wire == "raw" else F._NAME_DTYPE[cfg.wire]
                expected = x.to(wire).to(x.dtype)
            assert_bits_equal(y, expected)
            ratios.setdefault(spec, {})[cut] = codec.stats.compression_ratio
    sparsity = {cut: (x == 0).float().mean().item() for cut, x in activations.items()}
    lines = [f"{'scheme':<20}" + "".join(f"{c:>9}" for c in CUTS)]
    lines.append(f"{'(zeros)':<20}" + "".join(f"{sparsity[c]:>9.2f}" for c in CUTS))
    for spec, row in ratios.items():
        lines.append(f"{spec:<20}" + "".join(f"{row[c]:>9.2f}" for c in CUTS))
    print("\ncompression ratio (fp32 bytes / frame bytes), ResNet-18 on 64 CIFAR-10 images")
    print("\n".join(lines))
    record_property("compression_ratios", ratios)
    # sanity, not a benchmark: zstd finds the zeros, and fewer bits mean smaller frames
    for cut in CUTS:
        assert ratios["fp32+zstd1"][cut] > 1.2
        assert ratios["q2+zstd1"][cut] > ratios["q4+zstd1"][cut] > ratios["q8+zstd1"][cut] > 3.9
