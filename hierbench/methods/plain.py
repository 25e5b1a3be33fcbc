"""The methods' math as one plain PyTorch loop: no roles, channels, threads or link.

The oracle the tests hold the roles to (cloud-only must equal plain training of the whole model;
hierarchical must equal this loop's edge/exit and cloud updates — the cloud trains on
``decode(encode(act))`` with the run's codec, exactly the values the cloud role receives), and the
baseline of the harness-overhead benchmark. Same seed, model construction, data order,
augmentation and optimizer as :mod:`hierbench.methods.roles`.
"""

from __future__ import annotations

import time

import torch.nn.functional as F

from hierbench import data as hdata
from hierbench.codec import ActivationCodec
from hierbench.methods.config import RunConfig
from hierbench.methods.roles import build_parts, make_optimizer


def batches(cfg: RunConfig):
    """(steps_per_epoch, iterator of (epoch, x_uint8, y)) exactly as the edge role draws them."""
    train = hdata.load_dataset(
        cfg.dataset, "train", cfg.data_root, limit_per_class=cfg.limit_per_class
    )
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


def train_plain(cfg: RunConfig, *, codec: bool = True) -> dict:
    """Train ``cfg.method``'s math in one loop; return the modules and per-step losses.

    ``codec``: hierarchical only — pass the cut activations through ``cfg.codec`` (encode then
    decode, as the roles do) before the cloud part; ``False`` feeds the cloud the exact
    activations (the math of an ideal lossless, free codec).
    """
    spe, mean, std, it = batches(cfg)
    total = spe * cfg.epochs
    model, edge, cloud, head = build_parts(cfg)
    losses: list[tuple[float | None, float]] = []
    t0 = time.perf_counter()
    if cfg.method in ("cloud_only", "split"):
        # Split learning's gradient at the cut is exactly the unsplit model's: one optimizer.
        opt, sched = make_optimizer(cfg, model.parameters(), total)
        for _, x, y in it:
            loss = F.cross_entropy(model(hdata.normalize(x, mean, std)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append((None, loss.item()))
    else:
        wire = ActivationCodec(cfg.codec) if codec else None
        opt_e, sched_e = make_optimizer(cfg, [*edge.parameters(), *head.parameters()], total)
        opt_c, sched_c = make_optimizer(cfg, cloud.parameters(), total)
        for step, (_, x, y) in enumerate(it):
            act = edge(hdata.normalize(x, mean, std))
            loss_e = F.cross_entropy(head(act), y)
            opt_e.zero_grad(set_to_none=True)
            loss_e.backward()
            opt_e.step()
            sched_e.step()
            sent = act.detach()
            if wire is not None:  # the edge role encodes with seed=step (stochastic rounding)
                sent = wire.decode(wire.encode(sent, seed=step))
            loss_c = F.cross_entropy(cloud(sent), y)
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
