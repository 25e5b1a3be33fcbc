"""One fleet edge: its shard, its edge layers and exit head, its connection to its worker.

Edge i computes the fleet's partition (every role computes the same, :func:`wire.shards`),
keeps shard i, builds the model from ``run.seed`` and cuts it (all edges start from the same
parameters), connects to worker ``i % W`` and trains as the paper's edge does: per step it
encodes the cut activations and hands them to a byte-bounded background sender, then learns
from its own early exit, never waiting for the cloud — except at a FedAvg sync step
(``edge_sync fedavg:K``), where it sends its parameters and loads the average the cloud returns
before its next step. Split learning: the edge uploads its activations and waits for their
gradient (the cloud's answer to the step) before it steps; it has no exit. Cloud-only: the edge
uploads raw uint8 batches and trains nothing.
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
from hierbench.methods.checkpoint import atomic_save
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


class _Downlink:
    """What the worker sends this edge, read in order only when the edge must wait: FedAvg
    averages (at sync steps) and acknowledgements ``ack {next_step: a}`` (the cloud consumed
    every step below ``a``; one after every cloud step ``a - 1`` with ``a % N == 0``)."""

    def __init__(self, conn: wire.Conn, acked: int) -> None:
        self.conn, self.acked = conn, acked

    def _take(self, msg: RoleMessage) -> bool:
        if msg.kind != Kind.CONTROL:
            return False
        obj = messages.unpack_json(msg.payload)
        a = obj.get("next_step")
        if obj.get("type") != "ack" or isinstance(a, bool) or not isinstance(a, int):
            raise ProtocolError(f"expected an ack from the cloud worker, got {obj!r}")
        self.acked = max(self.acked, a)
        return True

    def params(self, step: int, numel: int, timeout: float):
        while True:
            msg = self.conn.recv_msg(timeout=timeout)
            if not self._take(msg):
                self.acked = max(self.acked, step + 1)
                return wire.unpack_params(msg, step, numel)

    def grad(self, step: int, codec: ActivationCodec, timeout: float) -> torch.Tensor:
        """Split learning: the decoded gradient of step ``step`` (acks read on the way)."""
        while True:
            msg = self.conn.recv_msg(timeout=timeout)
            if self._take(msg):
                continue
            if msg.kind != Kind.GRAD or msg.step != step:
                raise ProtocolError(
                    f"expected the gradient of step {step}, got {msg.kind.name} of step {msg.step}"
                )
            return codec.decode(msg.payload)

    def wait_done(self, timeout: float) -> None:
        """Wait for the worker's ``done``: it has consumed this edge's END, so every upload is
        in. Until then the edge keeps its connection open: closing it with uploads still in
        flight (an edge far ahead of a slow cloud) would reset the connection and lose them."""
        while True:
            msg = self.conn.recv_msg(timeout=timeout)
            if msg.kind == Kind.CONTROL and messages.unpack_json(msg.payload).get("type") == "done":
                return
            if not self._take(msg):
                raise ProtocolError(f"expected the worker's done, got {msg.kind.name}")

    def wait_ack(self, step: int, timeout: float) -> None:
        while self.acked < step:
            msg = self.conn.recv_msg(timeout=timeout)
            if not self._take(msg):
                raise ProtocolError(f"expected an ack, got {msg.kind.name} of step {msg.step}")


def checkpoint_path(checkpoint_dir: str | Path, edge: int) -> Path:
    return Path(checkpoint_dir) / f"edge-{edge}.pt"


def run_edge(
    fcfg: FleetConfig,
    edge: int,
    address: tuple[str, int] | Callable[[], tuple[str, int]],
    secret: bytes,
    *,
    out_dir: str | Path | None = None,
    save_state: bool = False,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    connect_timeout: float = 120.0,
    io_timeout: float = 600.0,
    ingress_file: str | Path | None = None,
) -> dict:
    """Run edge ``edge`` against its worker at ``address`` (host, port), or at what
    ``address()`` returns once the edge has loaded its data and built its model (a local run
    waits for the workers' ready file there); return its part of the run record (also written
    to ``<out_dir>/edge-<edge>.json``; with ``save_state`` its edge layers and exit head to
    ``<out_dir>/edge-<edge>.pt``).

    **Checkpoints and rejoining** (``run.checkpoint_every = N`` and ``checkpoint_dir``): the
    edge writes ``<checkpoint_dir>/edge-<edge>.pt`` atomically at every step ``c`` with
    ``c % N == 0`` and after every FedAvg sync: edge layers, exit head, optimizer, schedule,
    the position ``c`` (the data order and augmentation depend only on ``(seed, epoch)``, the
    codec's rounding on the step, so the position is the loader's state), its step records,
    ``acked`` (the cloud consumed every step below it) and the uploads of steps ``acked .. c-1``
    (kept because the cloud may not have them yet). Before writing the one at ``c`` it waits
    for the cloud's ack of step ``c - N`` (sent when the cloud consumed step ``c - N - 1``), so
    the kept uploads stay under 2N and the edge is held back only when it runs N steps ahead
    of the cloud; a FedAvg average also acknowledges its step.

    With ``resume`` the edge loads that checkpoint (none yet: it starts from step 0, as a new
    edge) and says ``hello {resume: {step: c, acked: a}}``; the worker (which accepts the same
    edge id back after checking its config, :mod:`hierbench.fleet.worker`) welcomes it with
    ``next_step`` k (never below ``a``: the worker refuses otherwise), ``params_step`` (the
    FedAvg step whose parameters it still waits for, or null) and ``last_sync`` (its last
    average, resent right after the welcome). The edge then sends the kept uploads of steps
    ``>= k``, recomputes steps ``c ..`` in order, uploading only those ``>= k`` (recomputed
    ones below k were consumed already: never trained twice by the cloud), and at a sync step
    below k loads the resent average. Split learning: the worker keeps each edge's last 2N + 1
    gradients and resends those of steps ``c .. k-1`` after the welcome (``grads_from: c``); the
    replayed steps apply them. Training is deterministic, so the recomputed edge equals
    the lost one and the run equals an uninterrupted one.
    """
    if isinstance(edge, bool) or not isinstance(edge, int) or not 0 <= edge < fcfg.edges:
        raise ConfigError(f"edge id {edge!r} is not in [0, {fcfg.edges})")
    cfg = fcfg.run
    every = cfg.checkpoint_every
    ckpt = None if checkpoint_dir is None else checkpoint_path(checkpoint_dir, edge)
    if (every or resume) and ckpt is None:
        raise ConfigError("checkpoint_every / --resume need a checkpoint folder (--checkpoint-dir)")
    torch.set_num_threads(cfg.threads_edge)
    train, parts, spe = wire.shards(fcfg)
    loader = wire.edge_loader(fcfg, train, parts, edge)
    total = spe * cfg.epochs
    mean, std = train.mean, train.std
    _, edge_m, _, head = build_parts(cfg)
    if cfg.method == "cloud_only":
        edge_m = head = None
    params = [p for m in (edge_m, head) if m is not None for p in m.parameters()]
    opt, sched = make_optimizer(cfg, params, total)
    if edge_m is not None:
        shape = (cfg.batch_size, 3, cfg.input_size, cfg.input_size)
        warm_up([edge_m], synthetic_input(shape), head, cfg.num_classes, cfg)
    codec = ActivationCodec(cfg.codec)
    grad_codec = ActivationCodec(cfg.grad_codec)
    n_params = wire.flat_state(edge_m, head).numel() if fcfg.sync_every else 0

    start, acked, kept, steps, resumes = 0, 0, {}, [], []
    if resume and ckpt.exists():
        st = _load_checkpoint(ckpt, fcfg, edge, spe)
        if edge_m is not None:
            edge_m.load_state_dict(st["edge"])
            if head is not None:  # split learning has no exit
                head.load_state_dict(st["head"])
            opt.load_state_dict(st["opt"])
            sched.load_state_dict(st["sched"])
        start, acked = st["step"], st["acked"]
        kept = {int(s): bytes(t.numpy()) for s, t in zip(st["kept_steps"], st["kept"], strict=True)}
        meta = json.loads(st["meta"])
        steps, resumes = meta["steps"], meta["resumes"]

    def save_checkpoint(step: int) -> None:
        state: dict = {"edge_id": edge, "fleet": json.dumps(fcfg.to_dict()), "step": step}
        if edge_m is not None:
            state.update(edge=edge_m.state_dict(), head=None if head is None else head.state_dict())
            state.update(opt=opt.state_dict(), sched=sched.state_dict())
        keep = sorted(s for s in kept if s >= down.acked)
        state.update(acked=down.acked, kept_steps=keep)
        state["kept"] = [torch.frombuffer(bytearray(kept[s]), dtype=torch.uint8) for s in keep]
        state["meta"] = json.dumps({"steps": steps, "resumes": resumes})
        atomic_save(state, ckpt)

    ingress = None
    if fcfg.ingress is not None:
        from hierbench import transfer

        if ingress_file is None:
            raise ConfigError(
                f"the fleet has a shared ingress ({fcfg.ingress}): give the edge the bucket's "
                "file (--ingress-file; the same for every edge on this machine)"
            )
        # created by the first edge, attached by the others (same rate, else ConfigError)
        ingress = transfer.Ingress(fcfg.ingress, path=ingress_file)
    host, port = address() if callable(address) else address
    conn = wire.connect_retry(
        host,
        port,
        secret,
        link=_link(fcfg),
        slots=cfg.slots,
        timeout=connect_timeout,
        ingress=ingress,
    )
    hello = {"type": "hello", "edge": edge, "fleet": fcfg.to_dict(), "steps_per_epoch": spe}
    if resume:
        hello["resume"] = {"step": start, "acked": acked}
    conn.send(messages.pack_control(hello))
    # A first welcome comes once every edge of the fleet has connected (the start barrier).
    welcome = conn.recv_json(timeout=max(60.0, connect_timeout))
    if welcome.get("type") != "welcome":
        raise ProtocolError(f"expected the worker's welcome, got {welcome.get('type')!r}")
    if "error" in welcome:
        raise ConfigError(f"the cloud worker refused edge {edge}: {welcome['error']}")
    k, pending, last_sync = (welcome.get(n) for n in ("next_step", "params_step", "last_sync"))
    for name, v in (("next_step", k), ("params_step", pending), ("last_sync", last_sync)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= total):
            raise ProtocolError(f"welcome: {name} {v!r} is not a step of this run")
    k = k or 0
    if k < acked or (k > 0 and not resume):
        raise ProtocolError(
            f"the cloud needs edge {edge}'s step {k}; this edge can send steps from "
            f"{acked if resume else 0} on" + ("" if resume else " (restart it with --resume)")
        )
    resent = None
    if last_sync is not None:
        resent = wire.unpack_params(conn.recv_msg(timeout=io_timeout), last_sync, n_params)
    replay_grads = {}  # split learning: the gradients of the steps it replays (start .. k-1)
    if cfg.method == "split" and resume and k > start:
        if welcome.get("grads_from") != start:
            raise ProtocolError(
                f"the cloud resends gradients from step {welcome.get('grads_from')!r}; this "
                f"edge replays from its checkpoint's step {start}"
            )
        for s in range(start, k):
            msg = conn.recv_msg(timeout=io_timeout)
            if msg.kind != Kind.GRAD or msg.step != s:
                raise ProtocolError(
                    f"expected the resent gradient of step {s}, got {msg.kind.name} of step "
                    f"{msg.step}"
                )
            replay_grads[s] = msg.payload
    if resume:
        resumes.append({"checkpoint_step": start, "cloud_next_step": k, "t": now()})
    down = _Downlink(conn, max(acked, k))
    kept = {s: m for s, m in kept.items() if s >= down.acked}
    uplink = Sender(conn, cfg.backlog_bytes, f"uplink-{edge}")
    for s in sorted(kept):  # uploads the cloud has not consumed (resume only)
        if s >= k:
            uplink.put(kept[s], s)
    t_start = now()
    for epoch in range(start // spe, cfg.epochs):
        loader.set_epoch(epoch)
        for i, (x, y) in enumerate(loader):
            if i >= spe:
                break
            step = epoch * spe + i
            if step < start:
                continue
            send = step >= k  # below k: the cloud consumed it before this edge restarted
            t0, c0 = now(), cpu_now()
            rec: dict = {"step": step, "t0": t0}
            if not send:
                rec["replayed"] = True
            if edge_m is None:  # cloud_only: the raw batch, nothing to train here
                msg = messages.pack(
                    RoleMessage(Kind.RAW, step, epoch, y, messages.pack_raw_images(x))
                )
                if send:
                    uplink.put(msg, step)
                rec.update(loss=None, compute_s=now() - t0)
            else:
                with autocast(cfg):
                    act = edge_m(as_input(hdata.normalize(x, mean, std), cfg))
                if send:
                    frame = codec.encode(
                        as_wire(act.detach()), seed=codec_seed(step, edge, fcfg.edges)
                    )
                    msg = messages.pack(RoleMessage(Kind.ACT, step, epoch, y, frame))
                rec["t_sent"] = now()
                if send:
                    uplink.put(msg, step)
                if head is None:  # split learning: wait for this step's gradient
                    if step < k:  # replayed: the cloud resent it
                        grad = grad_codec.decode(replay_grads.pop(step))
                    else:
                        grad = down.grad(step, grad_codec, io_timeout)
                    t_b = now()
                    rec["grad_wait_s"] = t_b - rec["t_sent"]
                    opt.zero_grad(set_to_none=True)
                    act.backward(grad.to(act.dtype).view_as(act))
                    rec["loss"] = None
                else:
                    t_b = now()
                    with autocast(cfg):
                        loss = F.cross_entropy(head(act), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    rec["loss"] = loss.item()
                optimizer_step(opt, sched)
                rec["compute_s"] = (rec["t_sent"] - t0) + (now() - t_b)
            if send:
                rec["bytes_up"] = len(msg)
                if every:
                    kept[step] = msg
            else:
                rec["bytes_up"] = 0
            rec["cpu_s"] = cpu_now() - c0
            rec["idle_s"] = idle(rec["compute_s"], cfg.edge_slowdown)
            synced = fcfg.syncs_after(step)
            if synced:
                t_sync = now()
                if step < k and step != pending:  # the cloud averaged it while we were gone
                    if resent is None or last_sync != step:
                        raise ProtocolError(
                            f"edge {edge} replays the FedAvg sync of step {step}, but the "
                            f"cloud resent only {last_sync!r}'s average (checkpoint_every?)"
                        )
                    avg = resent
                else:
                    uplink.put(wire.pack_params(step, wire.flat_state(edge_m, head)))
                    avg = down.params(step, n_params, io_timeout)
                wire.load_flat_state(avg, edge_m, head)
                rec["sync_wait_s"] = now() - t_sync
            rec["t1"] = now()
            steps.append(rec)
            nxt = step + 1
            if every and nxt < total and (synced or nxt % every == 0):
                t_ck = now()
                if nxt % every == 0 and nxt - every > 0:
                    down.wait_ack(nxt - every, io_timeout)
                kept = {s: m for s, m in kept.items() if s >= down.acked}
                save_checkpoint(nxt)
                rec["checkpoint_s"] = now() - t_ck
    uplink.put(messages.pack(RoleMessage(Kind.END, step=total)))
    uplink.flush()
    t_done = now()
    down.wait_done(io_timeout)
    t_cloud_done = now()
    uplink.close()
    ingress_wait = conn.endpoint.stats().ingress_wait_s if ingress is not None else None
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
        "t_cloud_done": t_cloud_done,
        "uplink_stall_s": uplink.stall_s,
        "ingress_wait_s": ingress_wait,
        "resumes": resumes,
        "steps": steps,
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / f"edge-{edge}.json", part)
        if save_state and edge_m is not None:
            torch.save(
                {"edge": edge_m.state_dict(), "head": None if head is None else head.state_dict()},
                out / f"edge-{edge}.pt",
            )
    return part


def _load_checkpoint(path: Path, fcfg: FleetConfig, edge: int, spe: int) -> dict:
    """Edge ``edge``'s checkpoint (tensors, numbers and strings only: ``weights_only``),
    refused with a clear error if it belongs to another edge or another fleet config."""
    try:
        st = torch.load(path, weights_only=True)
    except Exception as exc:  # a damaged or foreign file: say which
        raise ConfigError(f"cannot read the edge checkpoint {path}: {exc}") from None
    if not isinstance(st, dict) or st.get("edge_id") != edge:
        raise ConfigError(f"{path} is not edge {edge}'s checkpoint")
    if st.get("fleet") != json.dumps(fcfg.to_dict()):
        raise ConfigError(f"{path} was written by a run with another fleet config")
    step, acked = st.get("step"), st.get("acked")
    if not (isinstance(step, int) and isinstance(acked, int) and 0 <= acked <= step):
        raise ConfigError(f"{path}: bad position (step {step!r}, acked {acked!r})")
    if step > spe * fcfg.run.epochs:
        raise ConfigError(f"{path}: step {step} is past this run's end")
    return st


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
