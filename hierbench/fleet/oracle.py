"""A fleet's math as one plain loop in one process: E edge models and one cloud model.

The oracle the fleet tests hold the roles to. It shares no code with the roles
(:mod:`hierbench.fleet.edge`, :mod:`hierbench.fleet.worker`, :mod:`hierbench.fleet.wire`,
:mod:`hierbench.methods.parts`): models come from :mod:`hierbench.models`, data from
:mod:`hierbench.data` and the partition (both are the run's definition, as the batch loader is
for :mod:`hierbench.methods.plain`), the optimizer from ``torch.optim``, written out here. What
it computes per step s:

1. every edge i (in id order): its batch, edge layers, exit loss (mean over its B samples),
   SGD step; the activations it uploads go through the codec (encode with the step's codec
   seed, decode), as the worker receives them;
2. the cloud: for each worker w (in order) the concatenation of its served edges' batches,
   ``sum CE / (E * B)``, backward (gradients accumulate over the workers); BatchNorm sees each
   worker's batch on its own, and the running statistics kept are worker 0's (see
   :mod:`hierbench.fleet.worker`); one SGD step;
3. ``fedavg:K``, after every K-th step: the mean over the E edges of every edge parameter and
   floating buffer, summed in edge-id order, loaded into every edge.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from hierbench import data as hdata
from hierbench import models
from hierbench.codec import ActivationCodec
from hierbench.fleet.config import FleetConfig, codec_seed, edge_seed
from hierbench.fleet.partition import partition


def _sgd(cfg, params, total):
    opt = torch.optim.SGD(
        list(params), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, total) / total))
    )
    return opt, sched


def _model(cfg):
    """(model, edge, cloud, head) from the seed: the whole model, then the exit head, then the
    cut (cloud_only: no edge and no head, the cloud is the whole model)."""
    torch.manual_seed(cfg.seed)
    model = models.build_model(cfg.model, cfg.num_classes, stem=cfg.stem, input_size=cfg.input_size)
    if cfg.method == "cloud_only":
        return model, None, model, None
    head = None
    if cfg.has_exit:  # split learning trains no exit
        head = models.exit_head(model.cut_channels(cfg.cut), cfg.num_classes, cfg.exit_head)
    edge, cloud = models.split(model, cfg.cut)
    return model, edge, cloud, head


def _averaged(edge_modules):
    """Every edge's parameters and floating buffers replaced by their mean over the edges."""
    per_edge = []
    for edge, head in edge_modules:
        mods = [m for m in (edge, head) if m is not None]
        ts = [p for m in mods for p in m.parameters()]
        ts += [b for m in mods for b in m.buffers() if b.is_floating_point()]
        per_edge.append(ts)
    with torch.no_grad():
        for group in zip(*per_edge, strict=True):
            acc = group[0].detach().float().clone()
            for t in group[1:]:
                acc += t.detach().float()
            acc /= len(group)
            for t in group:
                t.copy_(acc)


def train_fleet_plain(fcfg: FleetConfig) -> dict:
    """Train the fleet's math on ``run.threads_cloud`` torch threads (the roles' count, 1 by
    default: how a kernel splits a reduction over threads changes its rounding); see
    :func:`_train`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(fcfg.run.threads_cloud)
    try:
        return _train(fcfg)
    finally:
        torch.set_num_threads(threads)


def _setup(fcfg: FleetConfig) -> dict:
    """Data, edge models and their optimizers, the cloud model and its optimizer."""
    cfg = fcfg.run
    e_count, b = fcfg.edges, cfg.batch_size
    if cfg.precision != "fp32":
        raise NotImplementedError("the fleet oracle computes fp32 runs")
    train = hdata.load_dataset(
        cfg.dataset, "train", cfg.data_root, limit_per_class=cfg.limit_per_class
    )
    parts = partition(
        train.labels.tolist(),
        e_count,
        fcfg.partition,
        seed=cfg.seed,
        num_classes=train.num_classes,
        min_per_edge=b,
    )
    spe = min(len(p) for p in parts) // b
    if cfg.batches_per_epoch is not None:
        spe = min(spe, cfg.batches_per_epoch)
    total = spe * cfg.epochs
    loaders = [
        hdata.BatchLoader(
            train.subset(parts[i]),
            b,
            shuffle=True,
            augment=cfg.augment,
            seed=edge_seed(cfg.seed, i),
            drop_last=True,
        )
        for i in range(e_count)
    ]
    edges, opts = [], []
    _, edge0, cloud, head0 = _model(cfg)  # built once (seconds for ResNet-18), copied per edge
    for _ in range(e_count):
        edge, head = copy.deepcopy(edge0), copy.deepcopy(head0)
        edges.append((edge, head))
        params = [p for m in (edge, head) if m is not None for p in m.parameters()]
        opts.append(_sgd(cfg, params, total) if edge else None)
    cloud_init = {n: t.detach().clone() for n, t in cloud.state_dict().items()}
    return {
        "train": train,
        "spe": spe,
        "total": total,
        "loaders": loaders,
        "edges": edges,
        "opts": opts,
        "cloud": cloud,
        "cloud_init": cloud_init,
        "groups": [list(range(w, e_count, fcfg.workers)) for w in range(fcfg.workers)],
    }


def _train(fcfg: FleetConfig) -> dict:
    """Train the fleet's math; return ``{"edges": [(edge, head)], "cloud": module,
    "cloud_init": its initial state dict, "losses": [(exit losses per edge, cloud loss)]}``."""
    cfg = fcfg.run
    e_count, b = fcfg.edges, cfg.batch_size
    st = _setup(fcfg)
    spe, total, loaders = st["spe"], st["total"], st["loaders"]
    edges, opts = st["edges"], st["opts"]
    cloud, cloud_init, groups = st["cloud"], st["cloud_init"], st["groups"]
    opt_c, sched_c = _sgd(cfg, cloud.parameters(), total)
    codec = ActivationCodec(cfg.codec)
    grad_codec = ActivationCodec(cfg.grad_codec)
    split = cfg.method == "split"
    mean, std = st["train"].mean, st["train"].std
    k = fcfg.sync_every
    losses = []
    for epoch in range(cfg.epochs):
        iters = []
        for loader in loaders:
            loader.set_epoch(epoch)
            iters.append(iter(loader))
        for i_step in range(spe):
            step = epoch * spe + i_step
            inputs, labels, exit_losses, acts = [], [], [], []
            for i, it in enumerate(iters):
                x, y = next(it)
                xf = hdata.normalize(x, mean, std)
                edge, head = edges[i]
                if edge is None:
                    inputs.append(xf)
                elif split:  # the edge steps once the cloud's gradient is back (below)
                    act = edge(xf)
                    acts.append(act)
                    sent = act.detach().float().contiguous()
                    seed = codec_seed(step, i, e_count)
                    inputs.append(codec.decode(codec.encode(sent, seed=seed)).requires_grad_())
                else:
                    act = edge(xf)
                    loss_e = F.cross_entropy(head(act), y)
                    opt, sched = opts[i]
                    opt.zero_grad(set_to_none=True)
                    loss_e.backward()
                    opt.step()
                    sched.step()
                    exit_losses.append(loss_e.item())
                    sent = act.detach().float().contiguous()
                    seed = codec_seed(step, i, e_count)
                    inputs.append(codec.decode(codec.encode(sent, seed=seed)))
                labels.append(y)
            opt_c.zero_grad(set_to_none=True)
            loss_total = 0.0
            kept = None
            for w, group in enumerate(groups):
                out = cloud(torch.cat([inputs[i] for i in group]))
                loss = F.cross_entropy(out, torch.cat([labels[i] for i in group]), reduction="sum")
                (loss / (e_count * b)).backward()
                loss_total += loss.item()
                if w == 0:
                    kept = {n: t.clone() for n, t in cloud.named_buffers()}
            with torch.no_grad():
                for n, t in cloud.named_buffers():
                    t.copy_(kept[n])
            opt_c.step()
            sched_c.step()
            for i, act in enumerate(acts):  # split: each edge's own mean loss's gradient
                g = inputs[i].grad * e_count
                g = grad_codec.decode(grad_codec.encode(g.contiguous()))
                opt, sched = opts[i]
                opt.zero_grad(set_to_none=True)
                act.backward(g)
                opt.step()
                sched.step()
            losses.append((exit_losses, loss_total / (e_count * b)))
            if k and (step + 1) % k == 0:
                _averaged(edges)
    return {
        "edges": edges,
        "cloud": cloud,
        "cloud_init": cloud_init,
        "losses": losses,
        "steps_per_epoch": spe,
    }


def train_fleet_schedule(fcfg: FleetConfig, schedule: list[list[tuple[int, int]]]) -> dict:
    """Policy ``present``'s math for a given schedule: ``schedule[s]`` lists the ``(edge, edge
    step)`` pairs cloud step s consumed (a run record's ``consumed``, merged over the workers).
    Edges train as always (independent: their math does not depend on the cloud); cloud step s
    trains on the listed uploads, each worker on its served edges' (in edge-id order), with
    ``sum CE / n_s`` (n_s: the step's samples), worker 0's BatchNorm statistics kept (a worker
    without uploads changes nothing), and the learning rate of the cosine schedule at
    ``consumed samples / (E B)`` cloud steps. On ``run.threads_cloud`` threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(fcfg.run.threads_cloud)
    try:
        return _train_schedule(fcfg, schedule)
    finally:
        torch.set_num_threads(threads)


def _train_schedule(fcfg: FleetConfig, schedule) -> dict:
    cfg = fcfg.run
    if fcfg.sync_every or cfg.method == "split":
        raise NotImplementedError("a schedule is for independent hierarchical/cloud-only edges")
    e_count, b = fcfg.edges, cfg.batch_size
    st = _setup(fcfg)
    spe, total, loaders = st["spe"], st["total"], st["loaders"]
    edges, opts = st["edges"], st["opts"]
    cloud, groups = st["cloud"], st["groups"]
    codec = ActivationCodec(cfg.codec)
    mean, std = st["train"].mean, st["train"].std
    uploads = {}  # (edge, step) -> (decoded input, labels)
    for epoch in range(cfg.epochs):
        iters = []
        for loader in loaders:
            loader.set_epoch(epoch)
            iters.append(iter(loader))
        for i_step in range(spe):
            step = epoch * spe + i_step
            for i, it in enumerate(iters):
                x, y = next(it)
                xf = hdata.normalize(x, mean, std)
                edge, head = edges[i]
                if edge is None:
                    uploads[i, step] = (xf, y)
                    continue
                act = edge(xf)
                loss_e = F.cross_entropy(head(act), y)
                opt, sched = opts[i]
                opt.zero_grad(set_to_none=True)
                loss_e.backward()
                opt.step()
                sched.step()
                sent = act.detach().float().contiguous()
                seed = codec_seed(step, i, e_count)
                uploads[i, step] = (codec.decode(codec.encode(sent, seed=seed)), y)
    opt_c = torch.optim.SGD(
        list(cloud.parameters()), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    consumed, losses = 0, []
    for pairs in schedule:
        present = dict(pairs)  # edge -> its step
        n = len(present) * b
        factor = 0.5 * (1 + math.cos(math.pi * min(consumed / (e_count * b), total) / total))
        for group in opt_c.param_groups:
            group["lr"] = cfg.lr * factor
        opt_c.zero_grad(set_to_none=True)
        # worker 0's statistics are kept: unchanged when it has no uploads in this step
        kept = {name: t.clone() for name, t in cloud.named_buffers()}
        loss_total = 0.0
        for w, group in enumerate(groups):
            mine = [i for i in group if i in present]
            if not mine:
                continue
            xs = torch.cat([uploads[i, present[i]][0] for i in mine])
            ys = torch.cat([uploads[i, present[i]][1] for i in mine])
            loss = F.cross_entropy(cloud(xs), ys, reduction="sum")
            (loss / n).backward()
            loss_total += loss.item()
            if w == 0:
                kept = {name: t.clone() for name, t in cloud.named_buffers()}
        with torch.no_grad():
            for name, t in cloud.named_buffers():
                t.copy_(kept[name])
        opt_c.step()
        consumed += n
        losses.append(loss_total / n)
    return {"edges": edges, "cloud": cloud, "cloud_init": st["cloud_init"], "losses": losses}
