"""quantize / dequantize kernels against hierbench.ops.reference, and the public API's contract.

Bit-exactness: payload, scale and offset equal the reference (``torch.equal``) for every
combination of bits x granularity x rounding x input dtype, and dequantize equals the reference
for every output dtype. On CUDA the reference runs on the CPU copy, so these tests also hold the
CUDA kernels to the CPU bits.
"""

from __future__ import annotations

import math

import pytest
import torch

from hierbench import ops
from hierbench.ops import QuantConfig, QuantizedTensor, dequantize, quantize, reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
BITS = [2, 4, 8]
# (granularity, group_size, channel_dim)
GRANULARITIES = [
    ("tensor", 128, 1),
    ("channel", 128, 0),
    ("channel", 128, 1),
    ("channel", 128, -1),
    ("group", 32, 1),
    ("group", 64, 1),  # 32, 64, 128, 256: the CPU's constant-size path for full groups
    ("group", 128, 1),
    ("group", 256, 1),
    ("group", 1024, 1),
]
ROUNDINGS = ["nearest", "stochastic"]
SHAPES = [(3, 5, 7), (2, 33, 9, 5), (1025,), (4, 70, 130)]
EPS = 2.0**-24  # float32 unit roundoff


def _gran_id(g):
    gran, gs, cd = g
    return {"tensor": "tensor", "channel": f"channel{cd}", "group": f"group{gs}"}[gran]


def _channel_ok(shape, gran, cd):
    return gran != "channel" or -len(shape) <= cd < len(shape)


def _data(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed + sum(shape))
    x = torch.randn(shape, generator=g) * 3 + 0.5
    return x.to(dtype).to(device)


def _assert_quant_equal(got, want):
    """Bit-exact (the sign of a zero included: floats are compared as int32 bit patterns), except
    that any NaN (the mark of an invalid group) equals any NaN."""
    for name, a, b in zip(("payload", "scale", "offset"), got, want, strict=True):
        a, b = a.cpu(), b.cpu()
        assert a.dtype == b.dtype and a.shape == b.shape, (name, a.shape, b.shape)
        if a.is_floating_point():
            assert torch.equal(a.isnan(), b.isnan()), name
            a = a.nan_to_num(0.0).view(torch.int32)
            b = b.nan_to_num(0.0).view(torch.int32)
        assert torch.equal(a, b), (name, (a != b).nonzero()[:8].flatten().tolist())


# ----------------------------------------------------------------------------------------------
# bit-exactness against the reference
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("gran", GRANULARITIES, ids=_gran_id)
@pytest.mark.parametrize("bits", BITS)
def test_matches_reference(device, bits, gran, rounding, dtype):
    granularity, gs, cd = gran
    for shape in SHAPES:
        if not _channel_ok(shape, granularity, cd):
            continue
        x = _data(shape, dtype, device)
        args = (bits, granularity, gs, cd, rounding, 987654321)
        got = torch.ops.hierbench.quantize(x, *args)
        want = reference.quantize(x.cpu(), *args)
        _assert_quant_equal(got, want)
        for odt in DTYPES:
            dq = torch.ops.hierbench.dequantize(*got, list(shape), bits, granularity, gs, cd, odt)
            ref = reference.dequantize(*want, shape, bits, granularity, gs, cd, odt)
            assert dq.dtype == odt and dq.shape == shape
            assert torch.equal(dq.cpu(), ref), (shape, odt)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_large_groups_and_chunked_paths(device, rounding):
    # Per-tensor and group_size > 2^16 take the two-pass chunked path on the CPU (several
    # parallel chunks per group, a partial last group); 2-bit ends mid-byte.
    x = _data((3 * (1 << 17) + 7,), torch.float32, device)
    x[12345] = 40.0
    for gran, gs in (("tensor", 128), ("group", 1 << 17), ("group", 4096)):
        for bits in BITS:
            args = (bits, gran, gs, 1, rounding, 5)
            _assert_quant_equal(
                torch.ops.hierbench.quantize(x, *args), reference.quantize(x.cpu(), *args)
            )


@pytest.mark.parametrize("cd", [0, 1, 2, 3, -1])
def test_channel_layouts(device, cd):
    # Long and short channel runs (row path and column path of the per-channel min/max).
    x = _data((3, 4, 70, 5), torch.bfloat16, device, seed=cd)
    for bits in BITS:
        args = (bits, "channel", 128, cd, "stochastic", 11)
        _assert_quant_equal(
            torch.ops.hierbench.quantize(x, *args), reference.quantize(x.cpu(), *args)
        )


def test_generator_matches_reference_words():
    # The counter-based generator: scalar Python spec (hash32, seed_keys) == tensor spec; values
    # are 24-bit multiples in [0, 1); indices past 2^32 use the high word.
    key0, key1 = reference.seed_keys(42)
    u = reference.uniform(42, 64, start=(1 << 32) - 32)
    for i, k in enumerate(range((1 << 32) - 32, (1 << 32) + 32)):
        r = reference.hash32((reference.hash32((k & 0xFFFFFFFF) ^ key0) + (k >> 32)) ^ key1)
        assert u[i].item() == (r >> 8) * 2.0**-24
    big = reference.uniform(7, 1 << 20)
    assert big.min() >= 0.0 and big.max() < 1.0
    assert abs(big.mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / big.numel())
    assert torch.equal(big * 2**24, (big * 2**24).floor())
    # negative seeds are their two's-complement bits
    assert reference.seed_keys(-1) == reference.seed_keys((1 << 64) - 1)


# ----------------------------------------------------------------------------------------------
# round trip and rounding properties
# ----------------------------------------------------------------------------------------------
def _per_element(t, q: QuantizedTensor):
    g, _ = reference._group_index(q.shape, *_cfg_args(q.config), t.device)
    return t[g].view(q.shape)


def _cfg_args(cfg):
    return cfg.granularity, cfg.group_size, cfg.channel_dim


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("gran", GRANULARITIES, ids=_gran_id)
@pytest.mark.parametrize("bits", BITS)
def test_nearest_error_within_half_scale(device, bits, gran, dtype):
    """|x - x_hat| <= scale/2 + fp allowance, elementwise.

    Allowance: t = (x - lo) * inv takes three roundings (x - lo, 1/scale, the product), each a
    relative error <= 2^-24, so |t - (x - lo)/scale| <= 3.01 * 2^-24 * qmax; decoding rounds
    code * scale and the sum, adding <= 2^-24 * (range + max|x|). In x units this is below
    2^-24 * (4 * range + 2 * max(|lo|, |hi|)): ~1e-7 relative, far below scale / 2.
    """
    granularity, gs, cd = gran
    x = _data((4, 70, 130), dtype, device, seed=bits)
    q = quantize(x, QuantConfig(bits, granularity, gs, cd))
    xh = dequantize(q, torch.float32).cpu()
    xf = x.cpu().float()
    scale = _per_element(q.scale.cpu(), q)
    lo = _per_element(q.offset.cpu(), q)
    hi = lo + scale * (2**bits - 1)
    allow = EPS * (4 * (hi - lo) + 2 * torch.maximum(lo.abs(), hi.abs()))
    err = (xf - xh).abs()
    assert bool((err <= scale / 2 + allow).all()), (err - scale / 2).max()
    assert (err > scale / 4).any()  # the bound is not vacuous


def test_stochastic_rounding_is_unbiased(device):
    """Mean of dequantize over N seeds -> x.

    Per element, code = floor(t) + Bernoulli(frac(t)) with P exact to 2^-24 (u has 24 bits and
    frac(t) a multiple of 2^-23 when t >= 1), so E[x_hat] = x up to float32 rounding, and the
    per-seed variance is scale^2 * f(1-f) <= scale^2/4. The mean of N seeds has standard
    deviation <= scale / (2 sqrt(N)): every element must lie within 6 of those (P(fail) < 2e-9
    per element; the seeds are fixed, so the test is deterministic), and the mean error over all
    n elements within 6 * scale / (2 sqrt(N n)).
    """
    n_seeds = 200
    x = _data((16, 256), torch.float32, device, seed=3)
    cfg = QuantConfig(bits=2, granularity="group", group_size=128, rounding="stochastic")
    acc = torch.zeros(x.shape, dtype=torch.float64)
    for seed in range(n_seeds):
        acc += dequantize(quantize(x, cfg, seed=seed)).cpu().double()
    mean = acc / n_seeds
    q = quantize(x, cfg)
    scale = _per_element(q.scale.cpu(), q).double()
    err = mean - x.cpu().double()
    sigma = scale / (2 * math.sqrt(n_seeds))
    assert bool((err.abs() <= 6 * sigma + 1e-6).all()), (err.abs() / sigma).max()
    assert abs(err.mean().item()) <= 6 * sigma.max().item() / math.sqrt(x.numel())
    # ...and round-to-nearest really is biased on the same data (the test can tell).
    near = dequantize(quantize(x, QuantConfig(bits=2))).cpu().double() - x.cpu().double()
    assert near.abs().mean() > 5 * err.abs().mean()


def test_stochastic_same_bits_for_same_seed_and_differs_across_seeds(device):
    x = _data((1000,), torch.float32, device)
    cfg = QuantConfig(bits=4, granularity="tensor", rounding="stochastic")
    a, b, c = quantize(x, cfg, seed=1), quantize(x, cfg, seed=1), quantize(x, cfg, seed=2)
    assert torch.equal(a.payload, b.payload)
    assert not torch.equal(a.payload, c.payload)
    assert a.seed == 1 and c.seed == 2


# ----------------------------------------------------------------------------------------------
# edge cases
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(0,), (0, 3), (3, 0, 2)])
@pytest.mark.parametrize("gran", GRANULARITIES, ids=_gran_id)
def test_empty(device, shape, gran):
    granularity, gs, cd = gran
    if not _channel_ok(shape, granularity, cd):
        return
    x = torch.empty(shape, device=device)
    q = quantize(x, QuantConfig(4, granularity, gs, cd))
    assert q.payload.numel() == 0
    g = reference.num_groups(shape, granularity, gs, cd)
    assert q.scale.shape == (g,) and q.offset.shape == (g,)
    assert bool((q.scale == 0).all()) and bool((q.offset == 0).all())
    y = dequantize(q)
    assert y.shape == shape and y.device == x.device
    _assert_quant_equal((q.payload, q.scale, q.offset), reference.quantize(x.cpu(), 4, *gran))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_one_element_and_constant_groups_decode_exactly(device, dtype):
    one = torch.tensor([3.25], device=device).to(dtype)
    for gran in ("tensor", "group", "channel"):
        q = quantize(one, QuantConfig(bits=2, granularity=gran, channel_dim=0))
        assert q.scale.item() == 0 and q.offset.item() == 3.25
        assert q.payload.tolist() == [0]
        assert torch.equal(dequantize(q), one)
    # every group constant, with a different constant per group, and a zero group
    x = torch.arange(8, device=device).repeat_interleave(128).to(dtype) - 3
    for bits in BITS:
        q = quantize(x, QuantConfig(bits=bits, group_size=128))
        assert bool((q.scale == 0).all())
        assert torch.equal(dequantize(q), x)


def test_non_contiguous_and_channels_last(device):
    base = _data((4, 6, 9, 5), torch.float32, device)
    views = {
        "transpose": base.transpose(1, 3),
        "slice": base[:, ::2],
        "channels_last": base.to(memory_format=torch.channels_last),
        # storage offset of one element: misaligned for 16-byte loads, contiguous or not
        "offset": base.reshape(-1)[1 : 1 + 7 * 150].view(150, 7),
        "offset_strided": base.reshape(-1)[1 : 1 + 7 * 150].view(150, 7)[:, :5],
    }
    for name, v in views.items():
        for gran, gs, cd in GRANULARITIES:
            args = (4, gran, gs, cd, "stochastic", 3)
            got = torch.ops.hierbench.quantize(v, *args)
            _assert_quant_equal(got, reference.quantize(v.contiguous().cpu(), *args))
            q = quantize(v, QuantConfig(4, gran, gs, cd))
            assert q.shape == tuple(v.shape), name
            # same codes as the contiguous copy: the layout never matters, only the logical order
            assert torch.equal(q.payload, quantize(v.contiguous(), q.config).payload), name


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_is_rejected_with_count_and_index(device, dtype, bad):
    x = _data((4, 256), torch.float32, device).to(dtype)
    x[1, 7] = bad
    x[3, 0] = bad
    with pytest.raises(ValueError, match=r"2 non-finite value\(s\).*first at flat index 263"):
        quantize(x, QuantConfig(bits=4, group_size=128))
    with pytest.raises(ValueError, match="non-finite"):
        quantize(x, QuantConfig(bits=8, granularity="channel", channel_dim=-1))
    # The raw op does not raise: such groups get NaN scale/offset and all-zero codes; the other
    # groups are untouched (and equal the reference).
    p, s, o = torch.ops.hierbench.quantize(x, 4, "group", 128, 1, "nearest", 0)
    bad_groups = [2, 6]
    assert s.isnan().nonzero().flatten().tolist() == bad_groups
    assert o.isnan().nonzero().flatten().tolist() == bad_groups
    assert bool((p.view(8, 64)[bad_groups] == 0).all())
    _assert_quant_equal((p, s, o), reference.quantize(x.cpu(), 4, "group", 128, 1))


def test_range_overflow_is_rejected(device):
    x = torch.tensor([-3e38, 3e38, 0.0, 1.0], device=device)
    with pytest.raises(ValueError, match="overflows float32 in group 0"):
        quantize(x, QuantConfig(bits=8, granularity="tensor"))


def test_tiny_range_quantizes_to_zero_codes(device):
    # scale below 2^-126 (not a normal float): inv = 0, every code 0, error <= hi - lo.
    x = torch.tensor([1e-38, 1.5e-38, 2e-38, 1e-38], device=device)
    q = quantize(x, QuantConfig(bits=8, granularity="tensor"))
    assert 0 < q.scale.item() < 2.0**-126
    assert q.payload.tolist() == [0, 0, 0, 0]
    assert bool((dequantize(q) - x).abs().max() <= x.max() - x.min())


# ----------------------------------------------------------------------------------------------
# out= variants
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_out_variants_reuse_buffers(device, dtype):
    cfg = QuantConfig(bits=4, group_size=32, rounding="stochastic")
    x = _data((8, 100), dtype, device)
    first = quantize(x, cfg, seed=1)
    ptrs = [t.data_ptr() for t in (first.payload, first.scale, first.offset)]
    for seed in (2, 3):
        x2 = _data((8, 100), dtype, device, seed=seed)
        q = quantize(x2, cfg, seed=seed, out=first)
        assert [t.data_ptr() for t in (q.payload, q.scale, q.offset)] == ptrs
        assert q.seed == seed
        _assert_quant_equal(
            (q.payload, q.scale, q.offset),
            reference.quantize(x2.cpu(), 4, "group", 32, 1, "stochastic", seed),
        )
        buf = torch.empty(8, 100, dtype=torch.float16, device=device)
        y = dequantize(q, out=buf)
        assert y.data_ptr() == buf.data_ptr()
        assert torch.equal(
            y.cpu(),
            reference.dequantize(
                q.payload.cpu(),
                q.scale.cpu(),
                q.offset.cpu(),
                (8, 100),
                4,
                "group",
                32,
                1,
                torch.float16,
            ),
        )


def test_out_buffers_are_checked(device):
    x = torch.randn(100, device=device)
    q = quantize(x, QuantConfig(bits=8, group_size=32))
    small = QuantizedTensor(q.payload[:10], q.scale, q.offset, q.shape, q.dtype, q.config)
    with pytest.raises(ValueError, match=r"payload must have shape \[100\]"):
        quantize(x, q.config, out=small)
    wrong = QuantizedTensor(q.payload, q.scale.double(), q.offset, q.shape, q.dtype, q.config)
    with pytest.raises(TypeError, match="scale must be Float"):
        quantize(x, q.config, out=wrong)
    with pytest.raises(ValueError, match="out must have shape"):
        dequantize(q, out=torch.empty(99, device=device))
    with pytest.raises(TypeError, match=r"out must be torch\.float16"):
        dequantize(q, torch.float16, out=torch.empty(100, device=device))


# ----------------------------------------------------------------------------------------------
# argument errors
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bits": 3}, "QuantConfig.bits must be one of 2, 4, 8, got 3"),
        ({"bits": 8.0}, "QuantConfig.bits"),
        ({"granularity": "row"}, "QuantConfig.granularity must be one of"),
        ({"group_size": 48}, "QuantConfig.group_size must be a power of two >= 32, got 48"),
        ({"group_size": 16}, "QuantConfig.group_size"),
        ({"rounding": "up"}, "QuantConfig.rounding must be one of 'nearest', 'stochastic'"),
        ({"channel_dim": 1.5}, "QuantConfig.channel_dim"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QuantConfig(**kwargs)


def test_call_errors_name_the_argument(device):
    x = torch.randn(4, 8, device=device)
    with pytest.raises(
        TypeError, match=r"x must be float32, float16 or bfloat16, got torch\.int64"
    ):
        quantize(torch.arange(4, device=device))
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        quantize([1.0, 2.0])
    with pytest.raises(TypeError, match="config must be a QuantConfig"):
        quantize(x, {"bits": 4})
    with pytest.raises(ValueError, match="seed must be an int64"):
        quantize(x, seed=2**64)
    with pytest.raises(ValueError, match=r"channel_dim must be in \[-2, 1\].*got 2"):
        quantize(x, QuantConfig(granularity="channel", channel_dim=2))
    with pytest.raises(TypeError, match="dtype must be float32, float16 or bfloat16"):
        dequantize(quantize(x), torch.int32)
    with pytest.raises(TypeError, match="q must be a QuantizedTensor"):
        dequantize(x)
    op = torch.ops.hierbench
    with pytest.raises(ValueError, match="bits must be 2, 4 or 8, got 3"):
        op.quantize(x, 3, "group", 32, 1, "nearest", 0)
    with pytest.raises(ValueError, match="granularity must be 'tensor', 'channel' or 'group'"):
        op.quantize(x, 8, "rows", 32, 1, "nearest", 0)
    with pytest.raises(ValueError, match="rounding must be 'nearest' or 'stochastic'"):
        op.quantize(x, 8, "group", 32, 1, "floor", 0)
    with pytest.raises(ValueError, match="group_size must be a power of two >= 32, got 33"):
        op.quantize(x, 8, "group", 33, 1, "nearest", 0)
    p, s, o = op.quantize(x, 8, "group", 32, 1, "nearest", 0)
    with pytest.raises(ValueError, match=r"payload must have shape \[8\]"):
        op.dequantize(p, s, o, [2, 8], 4, "group", 32, 1, torch.float32)
    with pytest.raises(ValueError, match=r"scale must have shape \[1\]"):
        op.dequantize(p, s[:0], o, [4, 8], 8, "group", 32, 1, torch.float32)
    with pytest.raises(TypeError, match="payload must be uint8"):
        op.dequantize(p.to(torch.int8), s, o, [4, 8], 8, "group", 32, 1, torch.float32)
    with pytest.raises(ValueError, match="shape must have non-negative sizes"):
        op.dequantize(p, s, o, [-4, -8], 8, "group", 32, 1, torch.float32)


# ----------------------------------------------------------------------------------------------
# torch.compile
# ----------------------------------------------------------------------------------------------
def test_torch_compile_fullgraph(device):
    def roundtrip(t):
        p, s, o = torch.ops.hierbench.quantize(t * 2, 4, "group", 32, 1, "stochastic", 9)
        return torch.ops.hierbench.dequantize(p, s, o, t.shape, 4, "group", 32, 1, t.dtype)

    f = torch.compile(roundtrip, fullgraph=True, backend="aot_eager")
    x = torch.randn(6, 40, device=device)
    want = reference.dequantize(
        *reference.quantize((x * 2).cpu(), 4, "group", 32, 1, "stochastic", 9),
        (6, 40),
        4,
        "group",
        32,
        1,
    )
    assert torch.equal(f(x).cpu(), want)
    g = torch.compile(
        lambda t: dequantize(quantize(t, QuantConfig(bits=8))), fullgraph=True, backend="aot_eager"
    )
    assert torch.equal(g(x), dequantize(quantize(x, QuantConfig(bits=8))))


def test_public_names():
    assert {"QuantConfig", "QuantizedTensor", "quantize", "dequantize"} <= set(ops.__all__)
    assert all(hasattr(ops, n) for n in ops.__all__)
    cfg = QuantConfig()
    assert cfg.num_groups((10, 300)) == 24 and QuantConfig(granularity="tensor").num_groups(()) == 1
    q = quantize(torch.randn(10, 30), QuantConfig(bits=2, group_size=32))
    assert q.nbytes == 75 + 10 * 8 and q.num_groups == 10 and q.numel == 300
