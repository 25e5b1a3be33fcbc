"""What both roles build and do the same way: the model parts, the optimizer and its step, the
numeric setting (``cfg.precision``: autocast and memory format), the untimed warm-up, the
edge-slowdown knob, and the progress callback's type.

Both roles build the full model from the same seed and cut it, so every method starts from the
same parameters, and ``split`` with the fp32 codec computes exactly the unsplit model's gradients.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from hierbench import data as hdata
from hierbench import models
from hierbench.errors import NonFiniteError
from hierbench.methods.config import RunConfig

NORMALIZATION = {
    "cifar10": (hdata.CIFAR10_MEAN, hdata.CIFAR10_STD),
    "tiny-imagenet": (hdata.TINY_IMAGENET_MEAN, hdata.TINY_IMAGENET_STD),
    "synthetic": (hdata.SYNTHETIC_MEAN, hdata.SYNTHETIC_STD),
}

ProgressFn = Callable[[str, int, int, dict], None]


def build_parts(cfg: RunConfig):
    """The full model, its edge and cloud parts, and the exit head, all from ``cfg.seed``.

    cloud_only: no edge part, the cloud part is the whole model, and the head is the
    deep-supervision control's exit (``cfg.aux_exit_weight > 0``; else None) — the same head,
    with the same initial parameters, as hierarchical training's at ``cfg.cut``.
    """
    torch.manual_seed(cfg.seed)
    model = models.build_model(cfg.model, cfg.num_classes, stem=cfg.stem, input_size=cfg.input_size)
    head = None
    if cfg.has_exit:
        head = models.exit_head(model.cut_channels(cfg.cut), cfg.num_classes, cfg.exit_head)
    if cfg.channels_last:
        for m in (model, head):
            if m is not None:
                m.to(memory_format=torch.channels_last)
    if cfg.method == "cloud_only":
        return model, None, model, head
    edge, cloud = models.split(model, cfg.cut)
    return model, edge, cloud, head


def autocast(cfg: RunConfig):
    """The forward passes' numeric context: bf16 autocast on the CPU, or nothing (fp32)."""
    if cfg.bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def as_input(x: torch.Tensor, cfg: RunConfig) -> torch.Tensor:
    """``x`` (N, C, H, W) in the run's memory format (channels_last with ``-cl``)."""
    if cfg.channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def as_wire(x: torch.Tensor) -> torch.Tensor:
    """What a codec encodes: float32, contiguous (bf16 activations widen exactly)."""
    return x.float().contiguous()


def make_optimizer(cfg: RunConfig, params, total_steps: int):
    """SGD (momentum, weight decay) with cosine decay over the run: the same on every side."""
    params = list(params)
    if not params:
        return None, None
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, total_steps) / total_steps))
    )
    return opt, sched


def optimizer_step(opt, sched) -> None:
    """Step the optimizer and its schedule (a side without parameters has neither)."""
    if opt is not None:
        opt.step()
        sched.step()


def warm_up(
    modules, x: torch.Tensor, head=None, num_classes: int = 10, cfg: RunConfig | None = None
) -> None:
    """One untimed training pass (forward, loss, backward; no optimizer step) of ``modules`` on
    the synthetic input ``x``, then every parameter, buffer and gradient put back exactly.

    The one-off costs of a first step (allocator growth, oneDNN primitive creation, lazy
    initialisation; ~0.3–1 s for ResNet-18 on one CPU core) then stay out of the measured
    training time, as the profiler's warm-up keeps them out of the profile. The global RNG is
    not touched, so a run's data order and results do not change. ``cfg``: run it in that run's
    precision (autocast, memory format).
    """
    mods = [m for m in (*modules, head) if m is not None]
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in mods]
    y = torch.zeros(x.shape[0], dtype=torch.long)
    out = x if cfg is None else as_input(x, cfg)
    with contextlib.nullcontext() if cfg is None else autocast(cfg):
        for m in modules:
            out = m(out)
        if head is not None:
            loss = F.cross_entropy(head(out), y) + out.float().square().mean()
        elif out.dim() == 2 and out.shape[1] == num_classes:
            loss = F.cross_entropy(out, y)
        else:
            loss = out.float().square().mean()
    loss.backward()
    for m, sd in zip(mods, saved, strict=True):
        m.load_state_dict(sd)
        for p in m.parameters():
            p.grad = None


def synthetic_input(shape, seed: int = 0x5EED) -> torch.Tensor:
    """The warm-up's input: fixed noise from its own generator (the global RNG is untouched)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def idle(compute_s: float, slowdown: float) -> float:
    """The edge-slowdown knob: stay busy (k - 1) x the compute just done; return that time.

    Busy, not asleep: a slower device computes the whole time, while a core that sleeps between
    steps comes back with cold caches and a lower clock, which made the edge's measured compute
    per batch run well above its profile (results/quick at commit ac218a1, k = 10 rows of
    tables/validation.csv). The loop yields the GIL at every turn, so the edge's sender thread
    still runs; on the edge's own pinned core nothing else is delayed.
    """
    if slowdown <= 1.0 or compute_s <= 0:
        return 0.0
    extra = (slowdown - 1.0) * compute_s
    deadline = time.perf_counter() + extra
    while time.perf_counter() < deadline:
        time.sleep(0)
    return extra


def mean_loss(xs: list) -> float | None:
    """The mean of the losses that are not None (None if there are none)."""
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def check_finite(value: torch.Tensor | float, what: str, step: int, side: str) -> None:
    """Stop the run on a non-finite loss or activation (training diverged): a
    :class:`~hierbench.errors.NonFiniteError` naming the step and the side. Every method and
    codec checks, so a lossless codec cannot carry NaN into a record."""
    t = value if isinstance(value, torch.Tensor) else torch.tensor(float(value))
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise NonFiniteError(
            f"step {step} ({side}): the {what} is not finite ({bad} of {t.numel()} values NaN or "
            "infinite): training diverged; lower --lr, or check the data and the codec"
        )
