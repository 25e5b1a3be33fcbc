"""The edge and cloud roles of the three methods. They share nothing but two channels.

``data``    the emulated link: training uploads (and split learning's gradients down).
``control`` unshaped: the run config, evaluation traffic, results. Evaluation time is recorded
            separately so that it never counts as training time.

Per method (``../shared/PAPER.md``):

* ``cloud_only``   edge: upload uint8 batch + labels.  cloud: normalise, train the whole model.
* ``split``        edge: forward to the cut, upload activations, wait for the gradient, backward,
                   step.  cloud: forward, loss, backward, step, send the gradient at the cut.
                   Strictly sequential.
* ``hierarchical`` edge: forward to the cut, hand the encoded activations to the uplink, early-exit
                   loss, backward, step; never waits for the cloud (a byte-bounded backlog absorbs a
                   slow or failed link).  cloud: consume in order, train its part.

Both roles build the full model from the same seed and cut it, so every method starts from the
same parameters, and ``split`` with the fp32 codec computes exactly the unsplit model's gradients.
"""

from __future__ import annotations

import collections
import contextlib
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from hierbench import data as hdata
from hierbench import models
from hierbench.codec import ActivationCodec
from hierbench.errors import TransferError
from hierbench.methods import wire
from hierbench.methods.config import RunConfig
from hierbench.methods.wire import Kind, Message

now = time.perf_counter  # CLOCK_MONOTONIC on Linux: comparable across processes on one machine

NORMALIZATION = {
    "cifar10": (hdata.CIFAR10_MEAN, hdata.CIFAR10_STD),
    "tiny-imagenet": (hdata.TINY_IMAGENET_MEAN, hdata.TINY_IMAGENET_STD),
    "synthetic": (hdata.SYNTHETIC_MEAN, hdata.SYNTHETIC_STD),
}


class Channel(Protocol):
    """What a role needs from a transport: ordered, reliable messages."""

    def send(self, data: bytes, timeout: float | None = None) -> None: ...

    def recv(self, timeout: float | None = None) -> bytes: ...

    def close(self, timeout: float | None = None) -> None: ...


class Sender:
    """Sends messages from a background thread, holding up to ``max_bytes`` not yet handed over.

    The hierarchical edge puts its uploads here and goes on training; ``put`` waits only when the
    backlog is full (the link is far slower than the edge, or down). Errors of the sending thread
    are raised by the next ``put`` or by ``flush``, unless ``recover`` is given: then a failed send
    calls ``recover(generation)``, which reconnects and :meth:`reset` s the queue, and sending
    goes on (the edge's resume after a cloud restart).
    """

    def __init__(
        self,
        channel: Channel,
        max_bytes: int,
        name: str = "uplink",
        recover: Callable[[int], None] | None = None,
    ) -> None:
        self._channel = channel
        self._max = max_bytes
        self._queue: collections.deque[tuple[int, bytes]] = collections.deque()
        self._bytes = 0
        self._cv = threading.Condition()
        self._error: BaseException | None = None
        self._closing = False
        self._recover = recover
        self.generation = 0
        self.stall_s = 0.0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, data: bytes, step: int = -1) -> None:
        t0 = now()
        with self._cv:
            while self._bytes and self._bytes + len(data) > self._max and self._error is None:
                self._cv.wait()
            self._raise()
            self._queue.append((step, data))
            self._bytes += len(data)
            self._cv.notify_all()
        self.stall_s += now() - t0

    def reset(self, channel: Channel, entries, generation: int) -> None:
        """Send ``entries`` ((step, bytes), in order) on ``channel`` instead of what is queued."""
        with self._cv:
            self._channel = channel
            self._queue = collections.deque(entries)
            self._bytes = sum(len(d) for _, d in self._queue)
            self.generation = generation
            self._cv.notify_all()

    def flush(self) -> None:
        """Wait until everything queued has been handed to the channel."""
        with self._cv:
            while self._queue and self._error is None:
                self._cv.wait()
            self._raise()

    def close(self) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise TransferError(f"sending failed: {self._error}") from self._error

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closing:
                    self._cv.wait()
                if not self._queue:
                    return
                _, data = self._queue[0]
                channel, generation = self._channel, self.generation
            try:
                channel.send(data)
            except BaseException as exc:  # surfaced by put()/flush(), unless we can recover
                error: BaseException = exc
                if self._recover is not None and not self._closing:
                    try:
                        self._recover(generation)
                        continue
                    except BaseException as again:
                        error = again
                with self._cv:
                    self._error = error
                    self._cv.notify_all()
                return
            with self._cv:
                if self.generation == generation and self._queue:
                    self._queue.popleft()
                    self._bytes -= len(data)
                self._cv.notify_all()


class Receiver:
    """Receives and parses messages on a background thread, so the sender never blocks on us.

    ``hook(message)`` sees every message first and returns True to consume it (acknowledgements);
    ``recover(generation)`` (optional) reconnects after a failed receive and returns the new
    channel and its generation.
    """

    def __init__(
        self,
        channel: Channel,
        name: str,
        hook: Callable[[Message], bool] | None = None,
        recover: Callable[[int], tuple[Channel, int]] | None = None,
    ) -> None:
        self._channel = channel
        self._queue: collections.deque[Message] = collections.deque()
        self._cv = threading.Condition()
        self._error: BaseException | None = None
        self._stop = False
        self._hook = hook
        self._recover = recover
        self.generation = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def get(self, timeout: float | None = None) -> Message:
        with self._cv:
            if not self._cv.wait_for(lambda: self._queue or self._error, timeout):
                raise TransferError(f"no message within {timeout} s")
            if self._queue:
                return self._queue.popleft()
            raise TransferError(f"receiving failed: {self._error}") from self._error

    def close(self) -> None:
        self._stop = True

    def _run(self) -> None:
        while not self._stop:
            try:
                msg = wire.unpack(self._channel.recv())
            except BaseException as exc:
                error: BaseException = exc
                if self._recover is not None and not self._stop:
                    try:
                        self._channel, self.generation = self._recover(self.generation)
                        continue
                    except BaseException as again:
                        error = again
                with self._cv:
                    self._error = error
                    self._cv.notify_all()
                return
            if self._hook is not None and self._hook(msg):
                continue
            with self._cv:
                self._queue.append(msg)
                self._cv.notify_all()


def build_parts(cfg: RunConfig):
    """The full model, its edge and cloud parts, and the exit head, all from ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    model = models.build_model(cfg.model, cfg.num_classes, stem=cfg.stem, input_size=cfg.input_size)
    head = None
    if cfg.method == "hierarchical":
        head = models.exit_head(model.cut_channels(cfg.cut), cfg.num_classes, cfg.exit_head)
    if cfg.method == "cloud_only":
        return model, None, model, None
    edge, cloud = models.split(model, cfg.cut)
    return model, edge, cloud, head


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


def _step(opt, sched) -> None:
    if opt is not None:
        opt.step()
        sched.step()


def warm_up(modules, x: torch.Tensor, head=None, num_classes: int = 10) -> None:
    """One untimed training pass (forward, loss, backward; no optimizer step) of ``modules`` on
    the synthetic input ``x``, then every parameter, buffer and gradient put back exactly.

    The one-off costs of a first step (allocator growth, oneDNN primitive creation, lazy
    initialisation; ~0.3–1 s for ResNet-18 on one CPU core) then stay out of the measured
    training time, as the profiler's warm-up keeps them out of the profile. The global RNG is
    not touched, so a run's data order and results do not change.
    """
    mods = [m for m in (*modules, head) if m is not None]
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in mods]
    y = torch.zeros(x.shape[0], dtype=torch.long)
    out = x
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


def _synthetic(shape, seed: int = 0x5EED) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _idle(compute_s: float, slowdown: float) -> float:
    """The edge-slowdown knob: idle (k - 1) x the compute just done; return the idle time."""
    if slowdown <= 1.0 or compute_s <= 0:
        return 0.0
    extra = (slowdown - 1.0) * compute_s
    time.sleep(extra)
    return extra


ProgressFn = Callable[[str, int, int, dict], None]


class EdgeRole:
    """The device: holds the data, runs the edge layers (and exit), drives the run."""

    def __init__(
        self,
        cfg: RunConfig,
        data: Channel,
        control: Channel,
        *,
        progress: ProgressFn | None = None,
        reconnect: Callable[[], tuple[Channel, Channel]] | None = None,
        reconnect_timeout: float = 120.0,
    ) -> None:
        self.cfg = cfg
        self.data = data
        self.control = control
        self.progress = progress
        self.codec = ActivationCodec(cfg.codec)
        self.grad_codec = ActivationCodec(cfg.grad_codec)
        # Resume after a cloud restart: keep every upload the cloud has not acknowledged as
        # checkpointed, reconnect on a failed transfer, replay from the step the cloud asks for.
        self.reconnect = reconnect if cfg.checkpoint_every else None
        self.reconnect_timeout = reconnect_timeout
        self.retained: collections.deque[tuple[int, bytes]] | None = (
            collections.deque() if cfg.checkpoint_every else None
        )
        self._lock = threading.RLock()
        self._gen = 0
        self.reconnects = 0

    def run(self) -> dict:
        cfg = self.cfg
        train = hdata.load_dataset(
            cfg.dataset, "train", cfg.data_root, limit_per_class=cfg.limit_per_class
        )
        test = None
        if cfg.eval != "none":
            split = "val" if cfg.dataset == "tiny-imagenet" else "test"
            test = hdata.load_dataset(cfg.dataset, split, cfg.data_root)
            if cfg.eval_samples is not None and cfg.eval_samples < len(test):
                test = test.subset(cfg.eval_samples, seed=cfg.seed)
        self.mean, self.std = train.mean, train.std
        loader = hdata.BatchLoader(
            train, cfg.batch_size, shuffle=True, augment=cfg.augment, seed=cfg.seed, drop_last=True
        )
        spe = (
            len(loader)
            if cfg.batches_per_epoch is None
            else min(len(loader), cfg.batches_per_epoch)
        )
        if spe < 1:
            raise ValueError(f"{len(train)} training images give no batch of {cfg.batch_size}")
        total = spe * cfg.epochs
        _, self.edge, _, self.head = build_parts(cfg)
        edge_params = [] if self.edge is None else list(self.edge.parameters())
        if self.head is not None:
            edge_params += list(self.head.parameters())
        self.opt, self.sched = make_optimizer(cfg, edge_params, total)
        if self.edge is not None:
            shape = (cfg.batch_size, 3, cfg.input_size, cfg.input_size)
            warm_up([self.edge], _synthetic(shape), self.head, cfg.num_classes)

        self._hello = {"type": "hello", "config": cfg.to_dict(), "steps_per_epoch": spe}
        start = self._handshake(self.control)
        if start != 0:
            raise TransferError(
                f"the cloud resumes at step {start}, but this edge starts a new run: restart the "
                "cloud without --resume (or with an empty checkpoint folder)"
            )
        resilient = self.reconnect is not None
        self.inbox = Receiver(
            self.control,
            "control-in",
            hook=self._on_control,
            recover=self._recover_control if resilient else None,
        )
        self.uplink = Sender(
            self.data, cfg.backlog_bytes, "uplink", recover=self._recover if resilient else None
        )
        self.ctrl_out = Sender(
            self.control, 1 << 62, "control-out", recover=self._recover if resilient else None
        )
        steps, epochs = [], []
        t_start = now()
        for epoch in range(cfg.epochs):
            loader.set_epoch(epoch)
            losses = []
            for i, (x, y) in enumerate(loader):
                if i >= spe:
                    break
                rec = self._train_step(epoch * spe + i, epoch, x, y)
                steps.append(rec)
                if rec.get("loss") is not None:
                    losses.append(rec["loss"])
                if self.progress:
                    self.progress("edge", epoch * spe + i + 1, total, rec)
            ep = {"epoch": epoch, "edge_train_loss": _mean(losses)}
            if cfg.eval == "epoch" or (cfg.eval == "end" and epoch == cfg.epochs - 1):
                ep.update(self._evaluate(epoch, test))
            epochs.append(ep)
        self._upload(total, wire.pack(Message(Kind.END, step=total)))
        self.uplink.flush()
        t_edge_done = now()
        self.ctrl_out.flush()
        cloud = self._collect(epochs)
        self.uplink.close()
        self.ctrl_out.close()
        self.inbox.close()
        return {
            "t_start": t_start,
            "t_edge_done": t_edge_done,
            "steps_per_epoch": spe,
            "total_steps": total,
            "steps": steps,
            "epochs": epochs,
            "uplink_stall_s": self.uplink.stall_s,
            "reconnects": self.reconnects,
            "cloud": cloud,
        }

    # -- uploads, acknowledgements and resume -----------------------------------------------

    def _handshake(self, control: Channel) -> int:
        """Send hello on a (new) control channel; return the step the cloud expects next."""
        control.send(wire.pack(Message(Kind.CONTROL, payload=wire.pack_json(self._hello))))
        msg = wire.unpack(control.recv())
        welcome = wire.unpack_json(msg.payload)
        if welcome.get("type") != "welcome":
            raise TransferError(f"expected the cloud's welcome, got {welcome.get('type')!r}")
        return int(welcome["next_step"])

    def _upload(self, step: int, msg: bytes) -> None:
        if self.retained is not None:
            with self._lock:
                self.retained.append((step, msg))
        self.uplink.put(msg, step)

    def _on_control(self, msg: Message) -> bool:
        """Consume the cloud's checkpoint acknowledgements: forget what it no longer needs."""
        if msg.kind != Kind.CONTROL or self.retained is None:
            return False
        obj = wire.unpack_json(msg.payload)
        if obj.get("type") != "ack":
            return False
        with self._lock:
            while self.retained and self.retained[0][0] < int(obj["next_step"]):
                self.retained.popleft()
        return True

    def _recover(self, generation: int) -> None:
        """The cloud went away: reconnect (it restarts from its checkpoint) and replay."""
        with self._lock:
            if generation < self._gen:
                return  # another thread already reconnected
            for c in (self.data, self.control):
                with contextlib.suppress(BaseException):
                    c.close(timeout=0)  # the peer is gone: drop what is queued (it is retained)
            deadline = now() + self.reconnect_timeout
            while True:
                try:
                    data, control = self.reconnect()
                    start = self._handshake(control)
                    break
                except (TransferError, OSError) as exc:
                    if now() > deadline:
                        raise TransferError(
                            f"the cloud did not come back within {self.reconnect_timeout} s: {exc}"
                        ) from exc
                    time.sleep(0.5)
            kept = list(self.retained)
            if kept and kept[0][0] > start:
                raise TransferError(
                    f"the cloud resumed at step {start}, but the edge only kept steps from "
                    f"{kept[0][0]} on: its checkpoint is older than its last acknowledgement"
                )
            self.data, self.control = data, control
            self._gen += 1
            self.reconnects += 1
            self.uplink.reset(data, [(st, m) for st, m in kept if st >= start], self._gen)
            self.ctrl_out.reset(control, [], self._gen)

    def _recover_control(self, generation: int) -> tuple[Channel, int]:
        self._recover(generation)
        with self._lock:
            return self.control, self._gen

    # -- one training step per method -------------------------------------------------------

    def _train_step(self, step: int, epoch: int, x: torch.Tensor, y: torch.Tensor) -> dict:
        cfg = self.cfg
        t0 = now()
        rec: dict = {"step": step, "epoch": epoch, "t0": t0}
        if cfg.method == "cloud_only":
            payload = wire.pack_raw_images(x)
            msg = wire.pack(Message(Kind.RAW, step, epoch, y, payload))
            rec["t_sent"] = now()
            self._upload(step, msg)
            rec.update(t1=now(), bytes_up=len(msg), bytes_down=0, loss=None)
            return rec
        xf = hdata.normalize(x, self.mean, self.std)
        act = self.edge(xf)
        frame = self.codec.encode(act.detach(), seed=step)
        msg = wire.pack(Message(Kind.ACT, step, epoch, y, frame))
        rec["bytes_up"] = len(msg)
        if cfg.method == "split":
            compute = now() - t0
            rec["t_sent"] = now()
            self.data.send(msg)
            reply = wire.unpack(self.data.recv())
            if reply.kind != Kind.GRAD or reply.step != step:
                raise TransferError(
                    f"expected the gradient of step {step}, got {reply.kind.name} "
                    f"of step {reply.step}"
                )
            rec["t_grad"] = now()
            rec["bytes_down"] = len(reply.payload) + wire.HEADER_BYTES
            t_b = now()
            grad = self.grad_codec.decode(reply.payload)
            self.opt.zero_grad(set_to_none=True)
            act.backward(grad)
            _step(self.opt, self.sched)
            compute += now() - t_b
            rec["loss"] = None
        else:  # hierarchical: upload first, then learn from the early exit; never wait
            rec["t_sent"] = now()
            self._upload(step, msg)
            t_b = now()
            loss = F.cross_entropy(self.head(act), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            _step(self.opt, self.sched)
            compute = (rec["t_sent"] - t0) + (now() - t_b)
            rec["loss"] = loss.item()
            rec["bytes_down"] = 0
        rec["idle_s"] = _idle(compute, cfg.edge_slowdown)
        rec["compute_s"] = compute
        rec["t1"] = now()
        return rec

    # -- evaluation ----------------------------------------------------------------------------

    @torch.no_grad()
    def _evaluate(self, epoch: int, test: hdata.ImageData) -> dict:
        """Exit accuracy here; the cloud's final accuracy is computed there from what we send."""
        cfg = self.cfg
        t0 = now()
        out: dict = {"eval_samples": len(test)}
        batches = []
        correct_exit = 0
        for mod in (self.edge, self.head):
            if mod is not None:
                mod.eval()
        for i in range(0, len(test), 256):
            x, y = test.images[i : i + 256], test.labels[i : i + 256]
            if cfg.method == "cloud_only":
                batches.append(wire.pack(Message(Kind.RAW, -1, epoch, y, wire.pack_raw_images(x))))
                continue
            act = self.edge(hdata.normalize(x, self.mean, self.std))
            if self.head is not None:
                correct_exit += int((self.head(act).argmax(1) == y).sum())
            frame = self.codec.encode(act, seed=i)
            batches.append(wire.pack(Message(Kind.ACT, -1, epoch, y, frame)))
        for mod in (self.edge, self.head):
            if mod is not None:
                mod.train()
        out["exit_acc"] = correct_exit / len(test) if self.head is not None else None
        req = {"type": "eval", "epoch": epoch, "batches": len(batches)}
        self.ctrl_out.put(wire.pack(Message(Kind.CONTROL, payload=wire.pack_json(req))))
        for b in batches:
            self.ctrl_out.put(b)
        out["edge_eval_s"] = now() - t0
        return out

    def _collect(self, epochs: list[dict]) -> dict:
        """Read the cloud's evaluation results and its records (sent after END)."""
        by_epoch = {e["epoch"]: e for e in epochs}
        while True:
            obj = wire.unpack_json(self.inbox.get().payload)
            if obj.get("type") == "eval_result":
                by_epoch[obj["epoch"]].update(
                    final_acc=obj["final_acc"], cloud_eval_s=obj["eval_s"]
                )
            elif obj.get("type") == "records":
                for e in obj.get("epochs", []):
                    by_epoch[e["epoch"]]["cloud_train_loss"] = e["cloud_train_loss"]
                return obj
            else:
                raise TransferError(f"unexpected control message {obj.get('type')!r}")


class CloudRole:
    """The server: receives the config, trains its part in arrival order, reports back."""

    def __init__(
        self,
        data: Channel,
        control: Channel,
        *,
        progress: ProgressFn | None = None,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
    ):
        self.data = data
        self.control = control
        self.progress = progress
        self.codec = None
        self.checkpoint = None if checkpoint_dir is None else Path(checkpoint_dir) / "cloud.pt"
        self.resume = resume
        if resume and self.checkpoint is None:
            raise ValueError("resume needs a checkpoint folder")

    def _save(self, next_step: int, steps, epochs, losses) -> None:
        """Checkpoint the cloud's state (atomically), then tell the edge what it may forget."""
        state = {
            "config": self.cfg.to_dict(),
            "next_step": next_step,
            "net": self.net.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "steps": steps,
            "epochs": epochs,
            "losses": losses,
        }
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.checkpoint)
        ack = {"type": "ack", "next_step": next_step}
        self.control.send(wire.pack(Message(Kind.CONTROL, payload=wire.pack_json(ack))))

    def _load(self):
        if not self.checkpoint.exists():
            return None
        state = torch.load(self.checkpoint, weights_only=True)
        if state["config"] != self.cfg.to_dict():
            raise TransferError(
                f"checkpoint {self.checkpoint} belongs to another run (its config differs)"
            )
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        return state

    def _control_json(self) -> dict:
        msg = wire.unpack(self.control.recv())
        if msg.kind != Kind.CONTROL:
            raise TransferError(f"expected a control message, got {msg.kind.name}")
        return wire.unpack_json(msg.payload)

    def run(self) -> dict:
        hello = self._control_json()
        if hello.get("type") != "hello":
            raise TransferError(f"expected hello, got {hello.get('type')!r}")
        cfg = RunConfig.from_dict(hello["config"])
        expected_link = getattr(self, "expected_link", cfg.link)
        if expected_link != cfg.link:
            raise TransferError(
                f"the cloud shapes its downlink as {expected_link!r} but the edge runs "
                f"link {cfg.link!r}: start the cloud with --link {cfg.link}"
            )
        spe = int(hello["steps_per_epoch"])
        total = spe * cfg.epochs
        self.cfg = cfg
        self.mean, self.std = NORMALIZATION[cfg.dataset]
        model, _, self.net, _ = build_parts(cfg)  # cloud_only: the whole model, else its part
        self.opt, self.sched = make_optimizer(cfg, self.net.parameters(), total)
        if cfg.method == "cloud_only":
            shape = (cfg.batch_size, 3, cfg.input_size, cfg.input_size)
        else:
            shape = (cfg.batch_size, *model.cut_shape(cfg.cut))
        warm_up([self.net], _synthetic(shape), None, cfg.num_classes)
        self.codec = ActivationCodec(cfg.codec)
        self.grad_codec = ActivationCodec(cfg.grad_codec)
        steps, epochs, losses = [], [], []
        expected = 0
        state = self._load() if self.resume else None
        if state is not None:
            expected = int(state["next_step"])
            steps, epochs, losses = state["steps"], state["epochs"], state["losses"]
        welcome = {"type": "welcome", "next_step": expected}
        self.control.send(wire.pack(Message(Kind.CONTROL, payload=wire.pack_json(welcome))))
        every = cfg.checkpoint_every if self.checkpoint is not None else 0
        while True:
            raw = self.data.recv()
            t_recv = now()
            msg = wire.unpack(raw)
            if msg.kind == Kind.END:
                break
            if msg.step != expected:
                raise TransferError(f"expected step {expected}, got {msg.step}: lost or reordered")
            expected += 1
            rec = self._train_step(msg, t_recv, len(raw))
            steps.append(rec)
            losses.append(rec["loss"])
            if self.progress:
                self.progress("cloud", msg.step + 1, total, rec)
            if (msg.step + 1) % spe == 0:
                epoch = msg.step // spe
                epochs.append({"epoch": epoch, "cloud_train_loss": _mean(losses)})
                losses = []
                if cfg.eval == "epoch" or (cfg.eval == "end" and epoch == cfg.epochs - 1):
                    self._evaluate(epoch)
            if every and expected % every == 0 and expected < total:
                self._save(expected, steps, epochs, losses)
        if expected != total:
            raise TransferError(f"END after {expected} of {total} steps")
        result = {"type": "records", "steps": steps, "epochs": epochs, "t_end": now()}
        self.control.send(wire.pack(Message(Kind.CONTROL, payload=wire.pack_json(result))))
        return result

    def _forward_input(self, msg: Message) -> torch.Tensor:
        if msg.kind == Kind.RAW:
            images = wire.unpack_raw_images(msg.payload, msg.labels.numel())
            return hdata.normalize(images, self.mean, self.std)
        if msg.kind == Kind.ACT:
            return self.codec.decode(msg.payload)
        raise TransferError(f"unexpected {msg.kind.name} message on the data channel")

    def _train_step(self, msg: Message, t_recv: float, nbytes: int) -> dict:
        t0 = now()
        x = self._forward_input(msg)
        split = self.cfg.method == "split"
        if split:
            x.requires_grad_(True)
        loss = F.cross_entropy(self.net(x), msg.labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        _step(self.opt, self.sched)
        rec = {
            "step": msg.step,
            "t_recv": t_recv,
            "t0": t0,
            "bytes_up": nbytes,
            "loss": loss.item(),
            "bytes_down": 0,
        }
        if split:
            frame = self.grad_codec.encode(x.grad)
            reply = wire.pack(Message(Kind.GRAD, msg.step, msg.epoch, None, frame))
            rec["t_grad_sent"] = now()
            self.data.send(reply)
            rec["bytes_down"] = len(reply)
        rec["t1"] = now()
        return rec

    @torch.no_grad()
    def _evaluate(self, epoch: int) -> None:
        req = self._control_json()
        if req.get("type") != "eval" or req.get("epoch") != epoch:
            raise TransferError(f"expected the evaluation of epoch {epoch}, got {req}")
        t0 = now()
        self.net.eval()
        correct = n = 0
        for _ in range(int(req["batches"])):
            msg = wire.unpack(self.control.recv())
            x = self._forward_input(msg)
            out = self.net(x)
            correct += int((out.argmax(1) == msg.labels).sum())
            n += msg.labels.numel()
        self.net.train()
        res = {
            "type": "eval_result",
            "epoch": epoch,
            "final_acc": correct / max(n, 1),
            "eval_s": now() - t0,
        }
        self.control.send(wire.pack(Message(Kind.CONTROL, payload=wire.pack_json(res))))


def _mean(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None
