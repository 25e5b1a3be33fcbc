"""The methods' math as one plain PyTorch loop: no roles, channels, threads or link.

The oracle the tests hold the roles to (cloud-only must equal plain training of the whole model;
hierarchical must equal this loop's edge/exit and cloud updates — the cloud trains on
``decode(encode(act))`` with the run's codec, exactly the values the cloud role receives), and the
baseline of the harness-overhead benchmark. Same seed, model construction, data order,
augmentation and optimizer as the roles (:mod:`hierbench.methods.parts`), written out here from
:mod:`hierbench.models` and ``torch.optim``: the oracle shares no code with what it checks.
"""

from __future__ import annotations

import contextlib
import math
import time

import torch
import torch.nn.functional as F

from hierbench import data as hdata
from hierbench import models
from hierbench.codec import ActivationCodec
from hierbench.methods.config import RunConfig


def batches(cfg: RunConfig):
    """(steps_per_epoch, iterator of (epoch, x_uint8, y)) exactly as the edge role draws them."""
    train = hdata.load_dataset(
        cfg.dataset, "train", cfg.data_root, limit_per_class=cfg.limit_per_class
    )
    if cfg.val_holdout:  # train on the rest; the held-out images are for evaluation only
        train, _ = hdata.holdout_split(train, cfg.val_holdout)
    loader = hdata.BatchLoader(
        train, cfg.batch_size, shuffle=True, augment=cfg.augment, seed=cfg.seed, drop_last=True
    )
    spe = len(loader) if cfg.batches_per_epoch is None else min(len(loader), cfg.batches_per_epoch)

    def gen():
        for epoch in range(cfg.epochs):
            loader.set_epoch(epoch)
            for i, (x, y) in enumerate(loader):
                if i >= spe:
                    break
                yield epoch, x, y

    return spe, train.mean, train.std, gen()


def _model_parts(cfg: RunConfig):
    """(model, edge, cloud, head) from ``cfg.seed``: the whole model, then the exit head
    (hierarchical, or cloud_only with ``aux_exit_weight``), then the cut (cloud_only without the
    exit: no edge, the cloud part is the whole model); channels_last with a ``-cl`` precision."""
    torch.manual_seed(cfg.seed)
    model = models.build_model(cfg.model, cfg.num_classes, stem=cfg.stem, input_size=cfg.input_size)
    aux = cfg.method == "cloud_only" and cfg.aux_exit_weight > 0
    head = None
    if cfg.method == "hierarchical" or aux:
        head = models.exit_head(model.cut_channels(cfg.cut), cfg.num_classes, cfg.exit_head)
    if cfg.precision.endswith("-cl"):
        model.to(memory_format=torch.channels_last)
        if head is not None:
            head.to(memory_format=torch.channels_last)
    if cfg.method == "cloud_only" and not aux:
        return model, None, model, None
    edge, cloud = models.split(model, cfg.cut)
    return model, edge, cloud, head


def _numerics(cfg: RunConfig):
    """(autocast context factory, input formatter) for ``cfg.precision``."""
    if cfg.precision.startswith("bf16"):

        def ctx():
            return torch.autocast("cpu", dtype=torch.bfloat16)
    else:
        ctx = contextlib.nullcontext
    if cfg.precision.endswith("-cl"):

        def fmt(x):
            return x.contiguous(memory_format=torch.channels_last)
    else:

        def fmt(x):
            return x

    return ctx, fmt


def _sgd_cosine(cfg: RunConfig, params, total: int):
    """SGD with momentum and weight decay; learning rate ``lr`` decayed by a half cosine over
    ``total`` steps."""
    opt = torch.optim.SGD(
        list(params), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, total) / total))
    )
    return opt, sched


def train_plain(cfg: RunConfig, *, codec: bool = True) -> dict:
    """Train ``cfg.method``'s math in one loop; return the modules and per-step losses.

    ``codec``: hierarchical only — pass the cut activations through ``cfg.codec`` (encode then
    decode, as the roles do) before the cloud part; ``False`` feeds the cloud the exact
    activations (the math of an ideal lossless, free codec).
    """
    spe, mean, std, it = batches(cfg)
    total = spe * cfg.epochs
    model, edge, cloud, head = _model_parts(cfg)
    ctx, fmt = _numerics(cfg)
    losses: list[tuple[float | None, float]] = []
    t0 = time.perf_counter()
    if cfg.method == "cloud_only" and head is not None:
        # Deep supervision: final loss + w * exit loss, back-propagated through the whole model.
        opt, sched = _sgd_cosine(cfg, [*model.parameters(), *head.parameters()], total)
        for _, x, y in it:
            with ctx():
                act = edge(fmt(hdata.normalize(x, mean, std)))
                loss = F.cross_entropy(cloud(act), y)
                loss_x = F.cross_entropy(head(act), y)
                objective = loss + cfg.aux_exit_weight * loss_x
            opt.zero_grad(set_to_none=True)
            objective.backward()
            opt.step()
            sched.step()
            losses.append((loss_x.item(), loss.item()))
    elif cfg.method in ("cloud_only", "split"):
        # Split learning's gradient at the cut is exactly the unsplit model's: one optimizer.
        opt, sched = _sgd_cosine(cfg, model.parameters(), total)
        for _, x, y in it:
            with ctx():
                loss = F.cross_entropy(model(fmt(hdata.normalize(x, mean, std))), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append((None, loss.item()))
    else:
        act_codec = ActivationCodec(cfg.codec) if codec else None
        opt_e, sched_e = _sgd_cosine(cfg, [*edge.parameters(), *head.parameters()], total)
        opt_c, sched_c = _sgd_cosine(cfg, cloud.parameters(), total)
        for step, (_, x, y) in enumerate(it):
            with ctx():
                act = edge(fmt(hdata.normalize(x, mean, std)))
                loss_e = F.cross_entropy(head(act), y)
            opt_e.zero_grad(set_to_none=True)
            loss_e.backward()
            opt_e.step()
            sched_e.step()
            sent = act.detach().float().contiguous()
            if act_codec is not None:  # the edge role encodes with seed=step (stochastic rounding)
                sent = act_codec.decode(act_codec.encode(sent, seed=step))
            with ctx():
                loss_c = F.cross_entropy(cloud(fmt(sent)), y)
            opt_c.zero_grad(set_to_none=True)
            loss_c.backward()
            opt_c.step()
            sched_c.step()
            losses.append((loss_e.item(), loss_c.item()))
    loop_s = time.perf_counter() - t0  # batches drawn lazily: loading is inside, as in the roles
    return {
        "model": model,
        "edge": edge,
        "cloud": cloud,
        "head": head,
        "losses": losses,
        "loop_s": loop_s,
    }
