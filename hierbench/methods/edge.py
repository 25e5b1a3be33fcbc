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

Checkpoint and resume (``cfg.checkpoint_every = N``; cloud_only and hierarchical)
---------------------------------------------------------------------------------

Each role checkpoints every ``N`` steps into its checkpoint folder, atomically (write a temporary
file, then rename): the cloud to ``cloud.pt`` (its model, optimizer, scheduler, records), the edge
to ``edge.pt`` (edge layers, exit head, optimizer, scheduler, data position, records, and the
uploads the cloud has not acknowledged yet, as uint8 tensors). Both are plain ``torch.save`` dicts
of tensors, numbers, strings and lists, read back with ``torch.load(weights_only=True)``.

The protocol, on the control channel (JSON objects; steps are global batch indices)::

    edge  -> cloud  hello    {config, steps_per_epoch, evals_done}   first, on every connection
    cloud -> edge   welcome  {next_step}  or  {error}                 the step the cloud needs next
    cloud -> edge   ack      {next_step}   after each cloud checkpoint: the edge may forget
                                           every upload below next_step
    ...             eval / eval_result, then after END on the data channel: records
    edge  -> cloud  done     the edge has the records (only with checkpoint_every: until then
                             the cloud stays ready for a reconnect)

*Uploads* carry their step in the message header. The edge keeps every upload from the last
acknowledged step on (in memory, and in its checkpoint). After ``welcome {next_step: s}`` it
sends, in order, exactly the kept uploads with step >= s and then every new one; the cloud
accepts only step ``expected`` (anything else is a :class:`ProtocolError`), so each step is
trained exactly once, in order.

*The cloud goes away* (killed, restarted with ``--resume``): the edge's next send or receive
fails; it reconnects (retrying for ``reconnect_timeout``), says hello, and replays from the
``next_step`` of the restarted cloud's checkpoint, which is never below the last acknowledgement.

*The edge goes away* (killed, restarted with ``--resume``): the cloud's receive fails; it keeps
its state in memory, goes back to ``accept()``, checks the new edge's hello (same config) and
welcomes it with the step it needs next. The restarted edge loads its checkpoint (position ``e``,
kept uploads from ``a <= next_step``); it recomputes steps ``e ..`` in order (the data order and
augmentation depend only on ``(seed, epoch)``, the codec's rounding on the step), and uploads
only those the cloud still needs: kept ones from ``next_step`` on, recomputed ones from
``max(e, next_step)`` on. Training is deterministic, so the edge's recomputed state equals the
one it lost, and the run equals an uninterrupted one.

*Evaluation* requests the edge has sent but got no result for are resent after a reconnect;
``evals_done`` in hello tells the cloud which results the edge already holds, and the cloud
redoes any other evaluation of an epoch it has trained.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
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
from hierbench.errors import ConfigError, TransferError, TransferTimeout
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


def _attempt(recover: Callable[..., object], *args) -> BaseException | None:
    """Run ``recover(*args)`` after a failed transfer: ``None`` if it succeeded, else its error
    (the one to report)."""
    try:
        recover(*args)
    except BaseException as again:
        return again
    return None


def _fail(worker, exc: BaseException) -> None:
    """Record a background thread's failure and wake whoever waits on it (``put``, ``get``)."""
    with worker._cv:
        worker._error = exc
        worker._cv.notify_all()


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
        self._last_step = -1  # the highest step queued (puts of steps <= it are duplicates)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, data: bytes, step: int = -1) -> None:
        """Queue ``data``; a message with a step (>= 0) that a :meth:`reset` already queued is
        dropped (the reset replayed it), so each step goes out once per connection."""
        t0 = now()
        with self._cv:
            while self._bytes and self._bytes + len(data) > self._max and self._error is None:
                self._cv.wait()
            self._raise()
            if 0 <= step <= self._last_step:
                return
            self._last_step = max(self._last_step, step)
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
            self._last_step = max([self._last_step, *(st for st, _ in self._queue)])
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
                error = exc
                if self._recover is not None and not self._closing:
                    error = _attempt(self._recover, generation)
                    if error is None:
                        continue
                _fail(self, error)
                return
            with self._cv:
                if self.generation == generation and self._queue:
                    self._queue.popleft()
                    self._bytes -= len(data)
                self._cv.notify_all()


_POLL_S = 0.2  # how often a Receiver thread looks at its stop flag


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

    def close(self, timeout: float = 5.0) -> None:
        """Stop receiving and wait for the thread (it polls, so this takes at most ~0.2 s).

        The thread must not outlive the role: a daemon thread still inside the native receive
        (GIL released) when the interpreter shuts down is killed as it takes the GIL back, and
        that aborts the process ("terminate called without an active exception")."""
        self._stop = True
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop:
            try:
                msg = wire.unpack(self._channel.recv(timeout=_POLL_S))
            except TransferTimeout:
                continue  # nothing yet: look at _stop again
            except BaseException as exc:
                error = exc
                if self._recover is not None and not self._stop:
                    error = _attempt(self._reconnect)
                    if error is None:
                        continue
                _fail(self, error)
                return
            if self._hook is not None and self._hook(msg):
                continue
            with self._cv:
                self._queue.append(msg)
                self._cv.notify_all()

    def _reconnect(self) -> None:
        self._channel, self.generation = self._recover(self.generation)


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

EDGE_CHECKPOINT = "edge.pt"
CLOUD_CHECKPOINT = "cloud.pt"


class ProtocolError(TransferError):
    """The peer broke the protocol (a lost or reordered step, an unexpected message): reconnecting
    would not help, so the resume machinery lets this one through."""


def _control(obj: dict) -> bytes:
    return wire.pack(Message(Kind.CONTROL, payload=wire.pack_json(obj)))


def _atomic_save(state: dict, path: Path) -> None:
    """``torch.save`` to a temporary file, flushed to disk, then renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _load_checkpoint(path: Path, cfg: RunConfig, role: str) -> dict:
    """Read ``path`` (weights_only) and check that it is ``role``'s checkpoint of this run."""
    if not path.exists():
        raise ConfigError(
            f"--resume: no {role} checkpoint at {path}; check --checkpoint-dir, or start without "
            "--resume to begin a new run"
        )
    try:
        state = torch.load(path, weights_only=True)
    except Exception as exc:  # truncated, not a checkpoint, or unsafe content
        raise ConfigError(f"cannot read the {role} checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict) or state.get("role", role) != role or "config" not in state:
        raise ConfigError(f"{path} is not a hierbench {role} checkpoint")
    mine, theirs = cfg.to_dict(), state["config"]
    differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    if differ:
        detail = ", ".join(f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} here" for k in differ)
        raise ConfigError(
            f"the {role} checkpoint {path} belongs to another run ({detail}); resume with the "
            "same settings, or use another --checkpoint-dir (or none) for a new run"
        )
    return state


class EdgeRole:
    """The device: holds the data, runs the edge layers (and exit), drives the run.

    With ``cfg.checkpoint_every`` it keeps every upload the cloud has not acknowledged (and with
    a ``reconnect`` function, reconnects and replays when the cloud goes away); with a
    ``checkpoint_dir`` it also checkpoints itself to ``<checkpoint_dir>/edge.pt``, and with
    ``resume`` it starts from that checkpoint (see the module docstring for the protocol).
    """

    def __init__(
        self,
        cfg: RunConfig,
        data: Channel,
        control: Channel,
        *,
        progress: ProgressFn | None = None,
        reconnect: Callable[[], tuple[Channel, Channel]] | None = None,
        reconnect_timeout: float = 120.0,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
    ) -> None:
        self.cfg = cfg
        self.data = data
        self.control = control
        self.progress = progress
        self.codec = ActivationCodec(cfg.codec)
        self.grad_codec = ActivationCodec(cfg.grad_codec)
        if resume and checkpoint_dir is None:
            raise ConfigError("--resume needs --checkpoint-dir (the folder of the edge checkpoint)")
        if checkpoint_dir is not None and not cfg.checkpoint_every:
            raise ConfigError(
                "a checkpoint folder was given but checkpoint_every is 0: nothing would be saved; "
                "set --checkpoint-every N"
            )
        self.checkpoint = None if checkpoint_dir is None else Path(checkpoint_dir) / EDGE_CHECKPOINT
        self.resume = resume
        # Resume after a cloud restart: keep every upload the cloud has not acknowledged as
        # checkpointed, reconnect on a failed transfer, replay from the step the cloud asks for.
        self.reconnect = reconnect if cfg.checkpoint_every else None
        self.reconnect_timeout = reconnect_timeout
        self.retained: collections.deque[tuple[int, bytes]] | None = (
            collections.deque() if cfg.checkpoint_every else None
        )
        self._lock = threading.RLock()
        self._gen = 0
        self._floor = 0  # uploads below this step are not sent: the cloud already has them
        self._eval_pending: dict[int, list[bytes]] = {}  # evaluations sent, no result yet
        self._evals_done: set[int] = set()
        self._abort: str | None = None  # why the cloud stopped, if it said so
        self.reconnects = 0
        self.resumed_from: int | None = None

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
        self.spe, self.total = spe, total
        _, self.edge, _, self.head = build_parts(cfg)
        edge_params = [] if self.edge is None else list(self.edge.parameters())
        if self.head is not None:
            edge_params += list(self.head.parameters())
        self.opt, self.sched = make_optimizer(cfg, edge_params, total)
        if self.edge is not None:
            shape = (cfg.batch_size, 3, cfg.input_size, cfg.input_size)
            warm_up([self.edge], _synthetic(shape), self.head, cfg.num_classes)

        steps, epochs, losses = [], [], []
        first = 0
        t_start = None
        if self.resume:
            state = self._load()
            first, t_start = int(state["next_step"]), float(state["t_start"])
            steps, epochs, losses = state["steps"], state["epochs"], state["losses"]
            self.resumed_from = first
        start = self._handshake(self.control)
        if t_start is None:
            # The training clock starts once the cloud has built (and warmed up) its part and
            # welcomed the edge: set-up on either side is not training time.
            t_start = now()
        kept_from = self.retained[0][0] if self.retained else first
        if not self.resume and start != 0:
            raise TransferError(
                f"the cloud is at step {start}, but this edge starts a new run: restart this edge "
                "with --resume and its --checkpoint-dir, or restart the cloud without --resume"
            )
        if start < kept_from:
            raise TransferError(
                f"the cloud needs step {start}, but this edge's checkpoint keeps uploads from step "
                f"{kept_from} on: the cloud lost more than it acknowledged (was it restarted "
                "without --resume, or with another --checkpoint-dir?)"
            )
        self._floor = start
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
        if self.retained:  # a resumed edge: first what the cloud lacks of what it kept
            self.uplink.reset(self.data, [(st, m) for st, m in self.retained if st >= start], 0)
        self.ctrl_out = Sender(
            self.control, 1 << 62, "control-out", recover=self._recover if resilient else None
        )
        every = cfg.checkpoint_every if self.checkpoint is not None else 0
        e0, i0 = divmod(first, spe)
        for epoch in range(e0, cfg.epochs):
            loader.set_epoch(epoch)
            for i, (x, y) in enumerate(loader):
                if i >= spe:
                    break
                if epoch == e0 and i < i0:
                    continue  # drawing the batch replays the epoch's augmentation generator
                step = epoch * spe + i
                rec = self._train_step(step, epoch, x, y)
                steps.append(rec)
                if rec.get("loss") is not None:
                    losses.append(rec["loss"])
                if self.progress:
                    self.progress("edge", step + 1, total, rec)
                if every and (step + 1) % every == 0 and (step + 1) % spe != 0:
                    self._save(step + 1, t_start, steps, epochs, losses)
            ep = {"epoch": epoch, "edge_train_loss": _mean(losses)}
            losses = []
            if cfg.eval == "epoch" or (cfg.eval == "end" and epoch == cfg.epochs - 1):
                ep.update(self._evaluate(epoch, test))
            epochs.append(ep)
            nxt = (epoch + 1) * spe
            if every and nxt % every == 0 and nxt < total:
                self._save(nxt, t_start, steps, epochs, losses)
        self._upload(total, wire.pack(Message(Kind.END, step=total)))
        self.uplink.flush()
        t_edge_done = now()
        self.ctrl_out.flush()
        cloud = self._collect(epochs)
        if cfg.checkpoint_every:  # the cloud waits for this before it stops accepting edges
            self.inbox.close()
            self.ctrl_out.put(_control({"type": "done"}))
            self.ctrl_out.flush()
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
            "resumed_from": self.resumed_from,
            "cloud": cloud,
        }

    # -- the edge's own checkpoint -----------------------------------------------------------

    def _save(self, next_step: int, t_start: float, steps, epochs, losses) -> None:
        """Checkpoint the edge after ``next_step`` steps, with the uploads not yet acknowledged
        (as uint8 tensors: nothing in the file needs more than ``weights_only`` to load)."""
        with self._lock:
            kept = list(self.retained)

        def state_of(x):
            return None if x is None else x.state_dict()

        state = {
            "role": "edge",
            "version": 1,
            "config": self.cfg.to_dict(),
            "steps_per_epoch": self.spe,
            "next_step": next_step,
            "t_start": t_start,
            "edge": state_of(self.edge),
            "head": state_of(self.head),
            "opt": state_of(self.opt),
            "sched": state_of(self.sched),
            "steps": steps,
            "epochs": epochs,
            "losses": losses,
            "kept_steps": [st for st, _ in kept],
            "kept": [torch.frombuffer(bytearray(m), dtype=torch.uint8) for _, m in kept],
        }
        _atomic_save(state, self.checkpoint)

    def _load(self) -> dict:
        state = _load_checkpoint(self.checkpoint, self.cfg, "edge")
        if int(state["steps_per_epoch"]) != self.spe:
            raise ConfigError(
                f"the edge checkpoint {self.checkpoint} has {state['steps_per_epoch']} steps per "
                f"epoch, this run {self.spe}: the dataset changed; start a new run"
            )
        for module, key in ((self.edge, "edge"), (self.head, "head"), (self.opt, "opt")):
            if module is not None:
                module.load_state_dict(state[key])
        if self.sched is not None:
            self.sched.load_state_dict(state["sched"])
        self.retained = collections.deque(
            (int(st), t.numpy().tobytes())
            for st, t in zip(state["kept_steps"], state["kept"], strict=True)
        )
        return state

    # -- uploads, acknowledgements and resume -----------------------------------------------

    def _handshake(self, control: Channel) -> int:
        """Send hello on a (new) control channel; return the step the cloud expects next."""
        with self._lock:
            done = sorted(self._evals_done)
        hello = {
            "type": "hello",
            "config": self.cfg.to_dict(),
            "steps_per_epoch": self.spe,
            "evals_done": done,
        }
        control.send(_control(hello))
        msg = wire.unpack(control.recv(timeout=60.0))
        welcome = wire.unpack_json(msg.payload)
        if welcome.get("type") != "welcome":
            raise ProtocolError(f"expected the cloud's welcome, got {welcome.get('type')!r}")
        if "error" in welcome:
            raise ConfigError(f"the cloud refused this edge: {welcome['error']}")
        return int(welcome["next_step"])

    def _upload(self, step: int, msg: bytes) -> None:
        if self.retained is not None:
            with self._lock:
                self.retained.append((step, msg))
        if step >= self._floor:
            self.uplink.put(msg, step)

    def _on_control(self, msg: Message) -> bool:
        """Consume the cloud's checkpoint acknowledgements (forget what it no longer needs) and
        note evaluation results (they stay queued for :meth:`_collect`)."""
        if msg.kind != Kind.CONTROL:
            return False
        obj = wire.unpack_json(msg.payload)
        if obj.get("type") == "abort":
            self._abort = str(obj.get("error"))
            return False
        if obj.get("type") == "eval_result":
            with self._lock:
                self._eval_pending.pop(obj.get("epoch"), None)
                self._evals_done.add(obj.get("epoch"))
            return False
        if obj.get("type") != "ack" or self.retained is None:
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
                if self._abort is not None:
                    raise ProtocolError(f"the cloud stopped the run: {self._abort}")
                try:
                    data, control = self.reconnect()
                    start = self._handshake(control)
                    break
                except ProtocolError:
                    raise
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
            resend = [m for epoch in sorted(self._eval_pending) for m in self._eval_pending[epoch]]
            self.ctrl_out.reset(control, resend, self._gen)

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
        msgs = [_control(req), *batches]
        with self._lock:  # atomic with a reconnect, which resends what has no result yet
            if epoch not in self._evals_done:
                self._eval_pending[epoch] = msgs
            for m in msgs:
                self.ctrl_out.put(m)
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
            elif obj.get("type") == "abort":
                raise ProtocolError(f"the cloud stopped the run: {obj.get('error')}")
            elif obj.get("type") == "records":
                for e in obj.get("epochs", []):
                    by_epoch[e["epoch"]]["cloud_train_loss"] = e["cloud_train_loss"]
                return obj
            else:
                raise ProtocolError(f"unexpected control message {obj.get('type')!r}")


class CloudRole:
    """The server: receives the config, trains its part in arrival order, reports back.

    With ``checkpoint_dir`` and ``cfg.checkpoint_every`` it checkpoints to
    ``<checkpoint_dir>/cloud.pt`` and acknowledges; with ``resume`` it starts from that
    checkpoint. With ``reaccept`` (a function returning the next edge's data and control
    channels) and ``cfg.checkpoint_every``, an edge that goes away is waited for: the cloud keeps
    its state, accepts the restarted edge and asks it for the step it needs next.
    """

    def __init__(
        self,
        data: Channel,
        control: Channel,
        *,
        progress: ProgressFn | None = None,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        reaccept: Callable[[], tuple[Channel, Channel]] | None = None,
        log: Callable[[str], None] | None = None,
    ):
        self.data = data
        self.control = control
        self.progress = progress
        self.codec = None
        self.checkpoint = (
            None if checkpoint_dir is None else Path(checkpoint_dir) / CLOUD_CHECKPOINT
        )
        self.resume = resume
        self.reaccept = reaccept
        self.log = log
        self.reconnects = 0
        if resume and self.checkpoint is None:
            raise ConfigError(
                "--resume needs --checkpoint-dir (the folder of the cloud checkpoint)"
            )

    def _save(self, next_step: int, steps, epochs, losses) -> None:
        """Checkpoint the cloud's state (atomically), then tell the edge what it may forget."""
        state = {
            "role": "cloud",
            "version": 1,
            "config": self.cfg.to_dict(),
            "next_step": next_step,
            "net": self.net.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "steps": steps,
            "epochs": epochs,
            "losses": losses,
        }
        _atomic_save(state, self.checkpoint)
        self.control.send(_control({"type": "ack", "next_step": next_step}))

    def _load(self):
        """The checkpoint's state, or None if there is none yet (the cloud died before its first
        checkpoint: the edge still keeps every upload, so the run restarts from step 0)."""
        if not self.checkpoint.exists():
            self._say(f"no checkpoint at {self.checkpoint} yet: the cloud starts at step 0")
            return None
        state = _load_checkpoint(self.checkpoint, self.cfg, "cloud")
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        return state

    def _say(self, text: str) -> None:
        if self.log is not None:
            self.log(f"cloud: {text}")

    def _control_json(self, control: Channel | None = None, timeout: float | None = None) -> dict:
        msg = wire.unpack((control or self.control).recv(timeout=timeout))
        if msg.kind != Kind.CONTROL:
            raise ProtocolError(f"expected a control message, got {msg.kind.name}")
        return wire.unpack_json(msg.payload)

    def _welcome(self, control: Channel, hello: dict, next_step: int) -> None:
        """Answer a hello: the step this cloud needs next; note which evaluations are owed."""
        control.send(_control({"type": "welcome", "next_step": next_step}))
        done = set(hello.get("evals_done", []))
        spe, cfg = self.spe, self.cfg
        self._owed = [
            e
            for e in range(cfg.epochs)
            if (cfg.eval == "epoch" or (cfg.eval == "end" and e == cfg.epochs - 1))
            and next_step >= (e + 1) * spe
            and e not in done
        ]

    def run(self) -> dict:
        hello = self._control_json()
        if hello.get("type") != "hello":
            raise ProtocolError(f"expected hello, got {hello.get('type')!r}")
        cfg = RunConfig.from_dict(hello["config"])
        expected_link = getattr(self, "expected_link", cfg.link)
        if expected_link != cfg.link:
            raise TransferError(
                f"the cloud shapes its downlink as {expected_link!r} but the edge runs "
                f"link {cfg.link!r}: start the cloud with --link {cfg.link}"
            )
        spe = int(hello["steps_per_epoch"])
        total = spe * cfg.epochs
        self.cfg, self.spe = cfg, spe
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
            self._say(f"resumed from {self.checkpoint} at step {expected}")
        self._welcome(self.control, hello, expected)
        every = cfg.checkpoint_every if self.checkpoint is not None else 0
        resilient = self.reaccept is not None and cfg.checkpoint_every > 0
        while True:
            try:
                if self._owed:  # evaluations owed to the edge come first (the model is ready)
                    self._evaluate(self._owed[0])
                    self._owed.pop(0)
                    continue
                raw = self.data.recv()
                t_recv = now()
                msg = wire.unpack(raw)
                if msg.kind == Kind.END:
                    if expected != total:
                        raise ProtocolError(f"END after {expected} of {total} steps")
                    result = {"type": "records", "steps": steps, "epochs": epochs, "t_end": now()}
                    self.control.send(_control(result))
                    if cfg.checkpoint_every:  # stay ready for a reconnect until the edge has it
                        bye = self._control_json()
                        if bye.get("type") != "done":
                            raise ProtocolError(f"expected done, got {bye.get('type')!r}")
                    return result
                if msg.step != expected:
                    raise ProtocolError(
                        f"expected step {expected}, got {msg.step}: lost or reordered"
                    )
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
                        self._owed.append(epoch)
                if every and expected % every == 0 and expected < total:
                    self._save(expected, steps, epochs, losses)
            except ProtocolError as exc:  # tell the edge, so that it does not wait to reconnect
                with contextlib.suppress(BaseException):
                    self.control.send(_control({"type": "abort", "error": str(exc)}))
                raise
            except TransferError as exc:
                if not resilient:
                    raise
                self._accept_edge(exc, expected)

    def _accept_edge(self, why: BaseException, next_step: int) -> None:
        """The edge went away: wait for it (or its restart), check its hello, welcome it."""
        self._say(f"lost the edge at step {next_step} ({why}); waiting for it to reconnect")
        for c in (self.data, self.control):
            with contextlib.suppress(BaseException):
                c.close(timeout=0)
        while True:
            try:
                data, control = self.reaccept()
            except TransferTimeout as exc:
                raise TransferError(
                    f"the edge went away at step {next_step} and did not come back: {exc}"
                ) from exc
            except TransferError as exc:  # a connection that failed its handshake
                self._say(f"a reconnect attempt failed ({exc}); waiting again")
                continue
            try:
                hello = self._control_json(control, timeout=30.0)
                problem = None
                if hello.get("type") != "hello":
                    problem = f"expected hello, got {hello.get('type')!r}"
                elif hello.get("config") != self.cfg.to_dict():
                    problem = "this cloud runs another config (start a separate cloud for it)"
                elif int(hello.get("steps_per_epoch", -1)) != self.spe:
                    problem = f"steps_per_epoch {hello.get('steps_per_epoch')}, not {self.spe}"
                if problem is None:
                    self._welcome(control, hello, next_step)
                    self.data, self.control = data, control
                    self.reconnects += 1
                    self._say(f"an edge reconnected; it resumes uploads at step {next_step}")
                    return
                control.send(_control({"type": "welcome", "error": problem}))
                control.close()
                data.close(timeout=0)
                self._say(f"refused an edge: {problem}")
            except (TransferError, OSError) as exc:  # a stale or half-made connection
                for c in (data, control):
                    with contextlib.suppress(BaseException):
                        c.close(timeout=0)
                self._say(f"a reconnect attempt failed ({exc}); waiting again")

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
            raise ProtocolError(f"expected the evaluation of epoch {epoch}, got {req}")
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
        self.control.send(_control(res))


def _mean(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None
