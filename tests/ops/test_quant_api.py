"""The public quantize API's conveniences and guarantees: keyword shorthand, integer types,
memory format, autograd (a clear error, or the straight-through fake_quantize) and the
``HIERBENCH_CPU_KERNEL`` check on every use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hierbench.ops import QuantConfig, dequantize, fake_quantize, quantize

REPO = Path(__file__).resolve().parents[2]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _x(*shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * 2).to(dtype)


def _same(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


# -- keyword shorthand --------------------------------------------------------------------------
def test_keyword_shorthand_equals_the_config():
    x = _x(6, 100)
    for kwargs in (
        {"bits": 4, "group_size": 64},
        {"bits": 2, "granularity": "channel", "channel_dim": 0},
        {"granularity": "tensor", "rounding": "stochastic"},
        {},
    ):
        cfg = QuantConfig(**kwargs)
        short = quantize(x, seed=5, **kwargs)
        full = quantize(x, cfg, seed=5)
        assert short.config == cfg
        assert _same(short.payload, full.payload) and _same(short.scale, full.scale)
        assert _same(fake_quantize(x, seed=5, **kwargs), dequantize(full))


def test_config_and_fields_together_is_an_error():
    x = _x(4, 64)
    with pytest.raises(TypeError, match=r"QuantConfig or its fields.*not both.*bits="):
        quantize(x, QuantConfig(bits=4), bits=4)
    with pytest.raises(TypeError, match=r"not both.*group_size="):
        fake_quantize(x, QuantConfig(), group_size=64)
    with pytest.raises(ValueError, match=r"QuantConfig\.bits must be one of 2, 4, 8, got 3"):
        quantize(x, bits=3)
    with pytest.raises(TypeError, match="config must be a QuantConfig"):
        quantize(x, 4)


# -- integer types ------------------------------------------------------------------------------
def test_numpy_integers_are_accepted_and_stored_as_int():
    cfg = QuantConfig(bits=np.int64(8), group_size=np.int32(64), channel_dim=np.int16(-1))
    assert cfg == QuantConfig(bits=8, group_size=64, channel_dim=-1)
    assert hash(cfg) == hash(QuantConfig(bits=8, group_size=64, channel_dim=-1))
    assert all(type(v) is int for v in (cfg.bits, cfg.group_size, cfg.channel_dim))
    assert QuantConfig(bits=torch.tensor(4)).bits == 4  # a 0-d integer tensor is an integer too
    x = _x(4, 64)
    q = quantize(x, bits=np.uint8(4), rounding="stochastic", seed=np.int64(-3))
    assert q.seed == -3 and type(q.seed) is int
    assert _same(q.payload, quantize(x, bits=4, rounding="stochastic", seed=-3).payload)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bits": True}, "QuantConfig.bits must be one of 2, 4, 8, got True"),
        ({"bits": np.float64(8)}, "QuantConfig.bits"),
        ({"bits": np.int64(3)}, "QuantConfig.bits must be one of 2, 4, 8, got 3"),
        ({"group_size": torch.tensor(64.0)}, "QuantConfig.group_size"),
        ({"channel_dim": np.bool_(True)}, "QuantConfig.channel_dim"),
    ],
)
def test_non_integers_are_still_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QuantConfig(**kwargs)


def test_seed_types():
    x = _x(64)
    for bad in (1.0, True, np.float32(2), 2**63):
        with pytest.raises(ValueError, match="seed must be an int64"):
            quantize(x, seed=bad)


# -- memory format ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_channels_last_is_preserved(dtype):
    base = _x(2, 6, 5, 3, dtype=dtype)
    for x, fmt in (
        (base.contiguous(memory_format=torch.channels_last), torch.channels_last),
        (_x(2, 3, 4, 5, 6, dtype=dtype).to(memory_format=torch.channels_last_3d), None),
    ):
        fmt = fmt or torch.channels_last_3d
        q = quantize(x, bits=4, group_size=32)
        assert q.memory_format == fmt
        y = dequantize(q)
        assert y.is_contiguous(memory_format=fmt) and not y.is_contiguous()
        plain = dequantize(quantize(x.contiguous(), bits=4, group_size=32))
        assert plain.is_contiguous() and torch.equal(y, plain)  # same values, logical order
        f = fake_quantize(x, bits=4, group_size=32)
        assert f.is_contiguous(memory_format=fmt) and torch.equal(f, plain)
    # other layouts come back row-major contiguous (the documented default)
    t = base.transpose(1, 3)
    assert quantize(t).memory_format == torch.contiguous_format
    assert dequantize(quantize(t)).is_contiguous()
    # an explicit out= is written as given
    out = torch.empty(2, 6, 5, 3, dtype=dtype)
    q = quantize(base.contiguous(memory_format=torch.channels_last))
    assert dequantize(q, out=out) is out and torch.equal(out, dequantize(q))


# -- autograd -----------------------------------------------------------------------------------
def test_quantize_refuses_a_tensor_that_requires_grad():
    x = _x(4, 64).requires_grad_()
    with pytest.raises(ValueError, match=r"requires grad.*fake_quantize.*detach"):
        quantize(x)
    with pytest.raises(ValueError, match="requires grad"):
        dequantize(quantize(x * 2))  # a non-leaf too
    # without a gradient to drop, it works: no_grad, or detached
    with torch.no_grad():
        a = dequantize(quantize(x))
    b = dequantize(quantize(x.detach()))
    assert torch.equal(a, b) and not a.requires_grad and not b.requires_grad
    q = quantize(x.detach())
    trained = type(q)(
        q.payload, q.scale.clone().requires_grad_(), q.offset, q.shape, q.dtype, q.config
    )
    with pytest.raises(ValueError, match=r"dequantize: q.scale requires grad"):
        dequantize(trained)
    with torch.no_grad():
        assert torch.equal(dequantize(trained), b)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_fake_quantize_forward_is_quantized_and_backward_is_identity(dtype, rounding):
    x = _x(3, 8, 5, dtype=dtype).requires_grad_()
    cfg = QuantConfig(bits=2, granularity="channel", rounding=rounding)
    y = fake_quantize(x, cfg, seed=11)
    assert y.requires_grad and y.dtype == dtype and y.grad_fn is not None
    assert _same(y.detach(), dequantize(quantize(x.detach(), cfg, seed=11)))
    upstream = torch.randn(3, 8, 5).to(dtype)
    (y * upstream).sum().backward()
    assert x.grad is not None and x.grad.dtype == dtype
    assert torch.equal(x.grad, upstream)  # straight through: identity


def test_fake_quantize_in_a_training_step():
    """The gradient of a loss through fake_quantize reaches the layer before it."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 32)
    head = torch.nn.Linear(32, 3)
    x = torch.randn(8, 16)
    loss = torch.nn.functional.cross_entropy(
        head(fake_quantize(torch.relu(layer(x)), bits=4, group_size=32)), torch.arange(8) % 3
    )
    loss.backward()
    assert layer.weight.grad is not None and bool(layer.weight.grad.abs().sum() > 0)
    with torch.no_grad():  # no grad mode: a plain tensor, no graph
        assert not fake_quantize(layer(x), bits=8).requires_grad


# -- kernel selection ---------------------------------------------------------------------------
def test_invalid_cpu_kernel_env_raises_on_every_use():
    """Every attempt to use the ops raises the ConfigError, not only the first (a failed first
    import must not leave a half-initialised hierbench.ops.quant behind)."""
    code = """
import torch
from hierbench import codec
from hierbench.errors import ConfigError
x = torch.randn(4, 256)
attempts = [
    lambda: codec.encode(x, "q8"),
    lambda: codec.encode(x, "q8"),
    lambda: __import__("hierbench.ops.quant"),
    lambda: __import__("hierbench.ops"),
    lambda: codec.encode(x, "q4+zstd1"),
]
for i, attempt in enumerate(attempts):
    try:
        attempt()
    except ConfigError as e:
        assert "HIERBENCH_CPU_KERNEL='avx2'" in str(e), e
    else:
        raise SystemExit(f"attempt {i} did not raise")
print("ok")
"""
    env = {**os.environ, "HIERBENCH_CPU_KERNEL": "avx2", "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == "ok", out.stderr
