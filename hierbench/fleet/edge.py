"""One fleet edge: its shard, its edge layers and exit head, its connection to its worker.

Edge i computes the fleet's partition (every role computes the same, :func:`wire.shards`),
keeps shard i, builds the model from ``run.seed`` and cuts it (all edges start from the same
parameters), connects to worker ``i % W`` and trains as the paper's edge does: per step it
encodes the cut activations and hands them to a byte-bounded background sender, then learns
from its own early exit, never waiting for the cloud — except at a FedAvg sync step
(``edge_sync fedavg:K``), where it sends its parameters and loads the average the cloud returns
before its next step. Cloud-only: the edge uploads raw uint8 batches and trains nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from hierbench import data as hdata
from hierbench.codec import ActivationCodec
from hierbench.errors import ConfigError, ProtocolError
from hierbench.fleet import wire
from hierbench.fleet.config import FleetConfig, codec_seed
from hierbench.fleet.partition import describe
from hierbench.fleet.record import cpu_now, now, write_json
from hierbench.methods import messages
from hierbench.methods.background import Sender
from hierbench.methods.messages import Kind, RoleMessage
from hierbench.methods.parts import (
    as_input,
    as_wire,
    autocast,
    build_parts,
    idle,
    make_optimizer,
    optimizer_step,
    synthetic_input,
    warm_up,
)


def _link(fcfg: FleetConfig):
    from hierbench import transfer

    return transfer.Link() if fcfg.run.link is None else transfer.Link.parse(fcfg.run.link)


def run_edge(
    fcfg: FleetConfig,
    edge: int,
    address: tuple[str, int] | Callable[[], tuple[str, int]],
    secret: bytes,
    *,
    out_dir: str | Path | None = None,
    save_state: bool = False,
    connect_timeout: float = 120.0,
    io_timeout: float = 600.0,
) -> dict:
    """Run edge ``edge`` against its worker at ``address`` (host, port), or at what
    ``address()`` returns once the edge has loaded its data and built its model (a local run
    waits for the workers' ready file there); return its part of the run record (also written
    to ``<out_dir>/edge-<edge>.json``; with ``save_state`` its edge layers and exit head to
    ``<out_dir>/edge-<edge>.pt``)."""
    if isinstance(edge, bool) or not isinstance(edge, int) or not 0 <= edge < fcfg.edges:
        raise ConfigError(f"edge id {edge!r} is not in [0, {fcfg.edges})")
    cfg = fcfg.run
    torch.set_num_threads(cfg.threads_edge)
    train, parts, spe = wire.shards(fcfg)
    loader = wire.edge_loader(fcfg, train, parts, edge)
    total = spe * cfg.epochs
    mean, std = train.mean, train.std
    _, edge_m, _, head = build_parts(cfg)
    if cfg.method == "cloud_only":
        edge_m = head = None
    params = [] if edge_m is None else [*edge_m.parameters(), *head.parameters()]
    opt, sched = make_optimizer(cfg, params, total)
    if edge_m is not None:
        shape = (cfg.batch_size, 3, cfg.input_size, cfg.input_size)
        warm_up([edge_m], synthetic_input(shape), head, cfg.num_classes, cfg)
    codec = ActivationCodec(cfg.codec)
    n_params = wire.flat_state(edge_m, head).numel() if fcfg.sync_every else 0

    host, port = address() if callable(address) else address
    conn = wire.connect_retry(
        host, port, secret, link=_link(fcfg), slots=cfg.slots, timeout=connect_timeout
    )
    hello = {"type": "hello", "edge": edge, "fleet": fcfg.to_dict(), "steps_per_epoch": spe}
    conn.send(messages.pack_control(hello))
    welcome = conn.recv_json(timeout=60.0)
    if welcome.get("type") != "welcome":
        raise ProtocolError(f"expected the worker's welcome, got {welcome.get('type')!r}")
    if "error" in welcome:
        raise ConfigError(f"the cloud worker refused edge {edge}: {welcome['error']}")
    uplink = Sender(conn, cfg.backlog_bytes, f"uplink-{edge}")
    t_start = now()
    steps = []
    for epoch in range(cfg.epochs):
        loader.set_epoch(epoch)
        for i, (x, y) in enumerate(loader):
            if i >= spe:
                break
            step = epoch * spe + i
            t0, c0 = now(), cpu_now()
            rec: dict = {"step": step, "t0": t0}
            if edge_m is None:  # cloud_only: the raw batch, nothing to train here
                msg = messages.pack(
                    RoleMessage(Kind.RAW, step, epoch, y, messages.pack_raw_images(x))
                )
                uplink.put(msg, step)
                rec.update(loss=None, compute_s=now() - t0)
            else:
                with autocast(cfg):
                    act = edge_m(as_input(hdata.normalize(x, mean, std), cfg))
                frame = codec.encode(as_wire(act.detach()), seed=codec_seed(step, edge, fcfg.edges))
                msg = messages.pack(RoleMessage(Kind.ACT, step, epoch, y, frame))
                rec["t_sent"] = now()
                uplink.put(msg, step)
                t_b = now()
                with autocast(cfg):
                    loss = F.cross_entropy(head(act), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                optimizer_step(opt, sched)
                rec["loss"] = loss.item()
                rec["compute_s"] = (rec["t_sent"] - t0) + (now() - t_b)
            rec["bytes_up"] = len(msg)
            rec["cpu_s"] = cpu_now() - c0
            rec["idle_s"] = idle(rec["compute_s"], cfg.edge_slowdown)
            if fcfg.syncs_after(step):
                t_sync = now()
                uplink.put(wire.pack_params(step, wire.flat_state(edge_m, head)))
                avg = wire.unpack_params(conn.recv_msg(timeout=io_timeout), step, n_params)
                wire.load_flat_state(avg, edge_m, head)
                rec["sync_wait_s"] = now() - t_sync
            rec["t1"] = now()
            steps.append(rec)
    uplink.put(messages.pack(RoleMessage(Kind.END, step=total)))
    uplink.flush()
    t_done = now()
    uplink.close()
    conn.close()
    part = {
        "edge": edge,
        "worker": fcfg.worker_of(edge),
        "shard_samples": len(parts[edge]),
        "partition": describe(parts),
        "steps_per_epoch": spe,
        "total_steps": total,
        "t_start": t_start,
        "t_done": t_done,
        "uplink_stall_s": uplink.stall_s,
        "steps": steps,
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / f"edge-{edge}.json", part)
        if save_state and edge_m is not None:
            torch.save(
                {"edge": edge_m.state_dict(), "head": head.state_dict()}, out / f"edge-{edge}.pt"
            )
    return part


def read_ready(path: str | Path, timeout: float) -> list[tuple[str, int]]:
    """The worker addresses rank 0 writes once every worker listens (local launcher)."""
    import time

    path = Path(path)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise ProtocolError(f"the cloud did not start listening within {timeout:.0f} s")
        time.sleep(0.1)
    obj = json.loads(path.read_text())
    return [(str(h), int(p)) for h, p in obj["workers"]]
