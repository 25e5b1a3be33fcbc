"""``torch.library.opcheck`` for every overload of every ``torch.ops.hierbench`` op.

SAMPLES maps each op to a function ``device -> [(overload, args, kwargs), ...]``. A test below
fails when an op in ``hierbench.ops.__all__`` (or any overload registered in the namespace) has no
samples, so a new kernel cannot land without its schema, fake and mutation checks.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from hierbench import ops

OP = torch.ops.hierbench


def _group_minmax(device):
    x = torch.randn(5, 33, device=device)
    return [
        (OP.group_minmax.default, (x, 32), {}),
        (
            OP.group_minmax.out,
            (x.half(), 32),
            {"min": torch.empty(6, device=device), "max": torch.empty(6, device=device)},
        ),
    ]


_QUANT_CASES = [
    # (shape, dtype, bits, granularity, group_size, channel_dim, rounding)
    ((5, 33), torch.float32, 4, "group", 32, 1, "nearest"),
    ((2, 3, 7), torch.bfloat16, 2, "channel", 128, 1, "stochastic"),
    ((3, 4, 5), torch.float16, 8, "channel", 128, -1, "nearest"),
    ((77,), torch.float32, 2, "tensor", 128, 1, "stochastic"),
    ((0, 4), torch.float32, 8, "group", 64, 1, "nearest"),
]


def _quantize(device):
    samples = []
    for shape, dtype, bits, gran, gs, cd, rnd in _QUANT_CASES:
        x = torch.randn(shape, device=device).to(dtype)
        args = (x, bits, gran, gs, cd, rnd, 3)
        p, s, o = OP.quantize(*args)
        samples.append((OP.quantize.default, args, {}))
        out = {"payload": torch.empty_like(p), "scale": torch.empty_like(s),
               "offset": torch.empty_like(o)}  # fmt: skip
        samples.append((OP.quantize.out, args, out))
    return samples


def _dequantize(device):
    samples = []
    for shape, dtype, bits, gran, gs, cd, rnd in _QUANT_CASES:
        x = torch.randn(shape, device=device).to(dtype)
        p, s, o = OP.quantize(x, bits, gran, gs, cd, rnd, 3)
        args = (p, s, o, list(shape), bits, gran, gs, cd)
        samples.append((OP.dequantize.default, (*args, dtype), {}))
        samples.append((OP.dequantize.out, args, {"out": torch.empty(shape, device=device)}))
    return samples


SAMPLES = {"group_minmax": _group_minmax, "quantize": _quantize, "dequantize": _dequantize}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_opcheck(device, name):
    for overload, args, kwargs in SAMPLES[name](device):
        torch.library.opcheck(overload, args, kwargs)


def _registered_overloads() -> set[str]:
    """Every ``name.overload`` declared in csrc/registration.cpp (all schemas live there)."""
    text = (Path(__file__).resolve().parents[2] / "csrc" / "registration.cpp").read_text()
    found = re.findall(r'm\.def\("(\w+)(?:\.(\w+))?\(', text)
    return {f"{name}.{overload or 'default'}" for name, overload in found}


def test_every_op_has_samples():
    exported_ops = {n for n in ops.__all__ if hasattr(OP, n)}
    assert {"group_minmax", "quantize", "dequantize"} <= exported_ops
    registered = _registered_overloads()
    missing = (exported_ops | {r.split(".")[0] for r in registered}) - set(SAMPLES)
    assert not missing, f"ops without opcheck samples in {__file__}: {sorted(missing)}"
    seen = {f"{name}.{ov._overloadname}" for name in SAMPLES for ov, _, _ in SAMPLES[name]("cpu")}
    assert registered <= seen, f"overloads without samples: {sorted(registered - seen)}"
