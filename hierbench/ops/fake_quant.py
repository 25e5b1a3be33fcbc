"""``fake_quantize``: quantization in the forward pass, a straight-through gradient backward.

For quantization-aware training: the forward pass sees exactly what a receiver decodes,
``dequantize(quantize(x, config, seed=seed))`` (the same bits as
``ActivationCodec("q4").decode(...)`` of the same tensor and seed), while the backward pass treats
the quantizer as the identity (the straight-through estimator of Bengio et al., 2013)::

    y = fake_quantize(x, bits=4)          # y.requires_grad when x does
    loss(y).backward()                    # x.grad == d loss / d y, unchanged

Min/max quantization never clips (every group's range covers its values), so the identity is
the estimator's usual clipped form with nothing to clip. The gradient is returned in ``x``'s dtype
and layout; no gradient flows to ``config`` or ``seed``.

:func:`hierbench.ops.quantize` itself refuses a tensor that requires grad (under grad mode) rather
than dropping its gradient silently: choose ``fake_quantize`` to train through the quantizer,
``x.detach()`` to quantize without a gradient.

Allowed imports: ``hierbench._ext``, ``hierbench.errors``, torch.
"""

from __future__ import annotations

import torch

from hierbench.ops.quant import (
    QuantConfig,
    check_input,
    check_seed,
    dequantize,
    quantize,
    resolve_config,
)

__all__ = ["fake_quantize"]


class _StraightThrough(torch.autograd.Function):
    """Forward: ``dequantize(quantize(x))`` in x's dtype and memory format; backward: identity."""

    @staticmethod
    def forward(x: torch.Tensor, config: QuantConfig, seed: int) -> torch.Tensor:
        with torch.no_grad():
            return dequantize(quantize(x.detach(), config, seed=seed))

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output, None, None


def fake_quantize(
    x: torch.Tensor,
    config: QuantConfig | None = None,
    *,
    bits: int | None = None,
    granularity: str | None = None,
    group_size: int | None = None,
    channel_dim: int | None = None,
    rounding: str | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """``dequantize(quantize(x, config, seed=seed))`` with a straight-through gradient.

    Args:
        x: float32, float16 or bfloat16, any shape and layout, on CPU or CUDA; may require grad.
        config: a :class:`~hierbench.ops.QuantConfig`, or ``None`` to use the keyword fields
            (``fake_quantize(x, bits=4, group_size=64)``; both is a ``TypeError``).
        bits, granularity, group_size, channel_dim, rounding: :class:`QuantConfig`'s fields.
        seed: the stochastic-rounding seed (an int64); give a fresh one per step with
            ``rounding="stochastic"``.

    Returns:
        A new tensor of ``x``'s shape, dtype and memory format (channels_last stays
        channels_last) holding the quantized values; it requires grad when ``x`` does (and grad
        mode is on), and its gradient reaches ``x`` unchanged (identity backward).

    Raises:
        As :func:`hierbench.ops.quantize` (non-finite input, invalid config, bad seed).
    """
    fields_ = {
        "bits": bits,
        "granularity": granularity,
        "group_size": group_size,
        "channel_dim": channel_dim,
        "rounding": rounding,
    }
    config = resolve_config(config, fields_, "fake_quantize")
    check_input(x, config)
    return _StraightThrough.apply(x, config, check_seed(seed))
