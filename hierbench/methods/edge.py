"""The edge role: holds the data, runs the edge layers (and exit head), drives the run.

What it does per method: :mod:`hierbench.methods`; checkpoint and resume:
:mod:`hierbench.methods.checkpoint`.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from hierbench import data as hdata
from hierbench.codec import ActivationCodec
from hierbench.errors import (
    ConfigError,
    NonFiniteError,
    ProtocolError,
    TransferError,
    TransferTimeout,
)
from hierbench.methods import messages
from hierbench.methods.background import Channel, Receiver, Sender, cpu_now, now
from hierbench.methods.checkpoint import EDGE_CHECKPOINT, atomic_save, load_checkpoint
from hierbench.methods.config import RunConfig
from hierbench.methods.messages import Kind, RoleMessage
from hierbench.methods.parts import (
    ProgressFn,
    as_input,
    as_wire,
    autocast,
    build_parts,
    check_finite,
    idle,
    make_optimizer,
    mean_loss,
    optimizer_step,
    synthetic_input,
    warm_up,
)


class EdgeRole:
    """The device: holds the data, runs the edge layers (and exit), drives the run.

    With ``cfg.checkpoint_every`` it keeps every upload the cloud has not acknowledged (and with
    a ``reconnect`` function, reconnects and replays when the cloud goes away); with a
    ``checkpoint_dir`` it also checkpoints itself to ``<checkpoint_dir>/edge.pt``, and with
    ``resume`` it starts from that checkpoint (the protocol: :mod:`hierbench.methods.checkpoint`).
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
        self._lock = threading.RLock()  # retained uploads, pending evaluations, the channels
        self._reconnecting = threading.Lock()  # one reconnect at a time (never held by training)
        self.cloud_away_s = 0.0  # time spent reconnecting (the edge trains on meanwhile)
        self._gen = 0
        self._floor = 0  # uploads below this step are not sent: the cloud already has them
        self._eval_pending: dict[int, list[bytes]] = {}  # evaluations sent, no result yet
        self._evals_done: set[int] = set()
        self._abort: str | None = None  # why the cloud stopped, if it said so
        self._abort_kind: str | None = None
        self.reconnects = 0
        self.resumed_from: int | None = None

    def run(self) -> dict:
        cfg = self.cfg
        train = hdata.load_dataset(
            cfg.dataset, "train", cfg.data_root, limit_per_class=cfg.limit_per_class
        )
        held = None
        if cfg.val_holdout:
            if cfg.val_holdout >= len(train):
                raise ConfigError(
                    f"val_holdout {cfg.val_holdout} leaves no training image of {len(train)}"
                )
            train, held = hdata.holdout_split(train, cfg.val_holdout)
        test = None
        if cfg.eval != "none" and held is not None:
            test = held  # tuning: evaluate on the held-out training images, never the test split
        elif cfg.eval != "none":
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
        if cfg.method == "cloud_only":
            self.head = None  # the deep-supervision control's exit lives in the cloud's model
        edge_params = [] if self.edge is None else list(self.edge.parameters())
        if self.head is not None:
            edge_params += list(self.head.parameters())
        self.opt, self.sched = make_optimizer(cfg, edge_params, total)
        if self.edge is not None:
            shape = (cfg.batch_size, 3, cfg.input_size, cfg.input_size)
            warm_up([self.edge], synthetic_input(shape), self.head, cfg.num_classes, cfg)

        steps, epochs, losses = [], [], []
        first = 0
        t_start = None
        if self.resume and self._checkpoint_missing():
            self.resumed_from = 0  # killed before its first checkpoint: recompute from step 0
        elif self.resume:
            state = self._load()
            first, t_start = int(state["next_step"]), float(state["t_start"])
            steps, epochs, losses = state["steps"], state["epochs"], state["losses"]
            self.resumed_from = first
        elif self.checkpoint is not None:
            # The folder marks that this edge started: a restart with --resume finds it even
            # when it was killed before its first checkpoint.
            self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        start = self._first_handshake()
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
            ep = {"epoch": epoch, "edge_train_loss": mean_loss(losses)}
            losses = []
            if cfg.eval == "epoch" or (cfg.eval == "end" and epoch == cfg.epochs - 1):
                ep.update(self._evaluate(epoch, test))
            epochs.append(ep)
            nxt = (epoch + 1) * spe
            at_boundary = every and cfg.eval == "epoch" and nxt < total
            if at_boundary:  # checkpoint with this epoch's results in hand: none is owed later
                self._await_eval(epoch, epochs)
            if every and (nxt % every == 0 or at_boundary) and nxt < total:
                self._save(nxt, t_start, steps, epochs, losses)
        self._upload(total, messages.pack(RoleMessage(Kind.END, step=total)))
        self.uplink.flush()
        t_edge_done = now()
        self.ctrl_out.flush()
        cloud = self._collect(epochs)
        if cfg.checkpoint_every:  # the cloud waits for this before it stops accepting edges
            self.inbox.close()
            self.ctrl_out.put(messages.pack_control({"type": "done"}))
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
            "cloud_away_s": self.cloud_away_s,
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
        atomic_save(state, self.checkpoint)

    def _checkpoint_missing(self) -> bool:
        """--resume of an edge killed before its first checkpoint: its folder exists (made when
        it started) but holds no ``edge.pt`` yet. Then it starts again from step 0 and, training
        being deterministic, recomputes what it lost; the cloud's welcome says from which step
        it needs uploads. A folder that does not exist is an error (a mistyped path)."""
        folder = self.checkpoint.parent
        return folder.is_dir() and not self.checkpoint.exists()

    def _load(self) -> dict:
        state = load_checkpoint(self.checkpoint, self.cfg, "edge")
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
        self._evals_done = {int(e["epoch"]) for e in state["epochs"] if "final_acc" in e}
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
        control.send(messages.pack_control(hello))
        msg = messages.unpack(control.recv(timeout=60.0))
        welcome = messages.unpack_json(msg.payload)
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
            try:
                self.uplink.put(msg, step)
            except TransferError:
                self._raise_abort(wait=2.0)
                raise

    def _on_control(self, msg: RoleMessage) -> bool:
        """Consume the cloud's checkpoint acknowledgements (forget what it no longer needs) and
        note evaluation results (they stay queued for :meth:`_collect`)."""
        if msg.kind != Kind.CONTROL:
            return False
        obj = messages.unpack_json(msg.payload)
        if obj.get("type") == "abort":
            self._abort_kind = obj.get("kind")
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
        """The cloud went away: reconnect (it restarts from its checkpoint) and replay.

        Only one thread reconnects (``_reconnecting``); the training thread never waits for it:
        ``_lock`` is held only to swap the channels at the end, so the edge goes on training and
        queues its uploads (kept in ``retained``) until the backlog is full, and then waits in
        ``Sender.put``, where the run record counts the wait (``uplink_stall_s``).
        """
        with self._reconnecting:
            if generation < self._gen:
                return  # another thread already reconnected
            t0 = now()
            for c in (self.data, self.control):
                with contextlib.suppress(BaseException):
                    c.close(timeout=0)  # the peer is gone: drop what is queued (it is retained)
            data, control, start = self._reconnect()
            with self._lock:
                kept = list(self.retained)
                if kept and kept[0][0] > start:
                    raise TransferError(
                        f"the cloud resumed at step {start}, but the edge only kept steps from "
                        f"{kept[0][0]} on: its checkpoint is older than its last acknowledgement"
                    )
                self.data, self.control = data, control
                self._gen += 1
                self.reconnects += 1
                self.cloud_away_s += now() - t0
                self.uplink.reset(data, [(st, m) for st, m in kept if st >= start], self._gen)
                # (step, bytes) entries like every Sender queue; evaluations carry no step
                resend = [
                    (-1, m) for e in sorted(self._eval_pending) for m in self._eval_pending[e]
                ]
                self.ctrl_out.reset(control, resend, self._gen)

    def _reconnect(self) -> tuple[Channel, Channel, int]:
        """New channels to the cloud and its welcome (the step it needs next), retried for up to
        ``reconnect_timeout`` seconds while the cloud is away (restarting, or not listening yet)."""
        deadline = now() + self.reconnect_timeout
        while True:
            if self._abort is not None:
                raise ProtocolError(f"the cloud stopped the run: {self._abort}")
            try:
                data, control = self.reconnect()
            except (TransferError, OSError) as exc:
                last = exc
            else:
                try:
                    return data, control, self._handshake(control)
                except ProtocolError:
                    raise
                except (TransferError, OSError) as exc:
                    for c in (data, control):
                        with contextlib.suppress(BaseException):
                            c.close(timeout=0)
                    last = exc
            if now() > deadline:
                raise TransferTimeout(
                    f"the cloud did not come back within {self.reconnect_timeout} s: {last}"
                ) from last
            time.sleep(0.5)

    def _first_handshake(self) -> int:
        """The first hello and welcome. If the cloud goes away meanwhile (killed while it builds
        its part, or before this edge connected), a resumable edge reconnects like after any
        other failure instead of giving up."""
        try:
            return self._handshake(self.control)
        except ProtocolError:
            raise
        except (TransferError, OSError):
            if self.reconnect is None:
                raise
        for c in (self.data, self.control):
            with contextlib.suppress(BaseException):
                c.close(timeout=0)
        t0 = now()
        self.data, self.control, start = self._reconnect()
        self.reconnects += 1
        self.cloud_away_s += now() - t0
        return start

    def _recover_control(self, generation: int) -> tuple[Channel, int]:
        self._recover(generation)
        with self._lock:
            return self.control, self._gen

    # -- one training step per method -------------------------------------------------------

    def _raise_abort(self, wait: float = 0.0) -> None:
        """Raise the error the cloud stopped the run with, if it did (after a failed transfer,
        ``wait`` up to this long for its abort message: it comes just before the connection
        goes)."""
        deadline = now() + wait
        while self._abort is None and now() < deadline:
            time.sleep(0.02)
        if self._abort is None:
            return
        if self._abort_kind == "non_finite":
            raise NonFiniteError(self._abort)
        raise ProtocolError(f"the cloud stopped the run: {self._abort}")

    def _train_step(self, step: int, epoch: int, x: torch.Tensor, y: torch.Tensor) -> dict:
        self._raise_abort()  # the cloud stopped the run: do not train on
        cfg = self.cfg
        t0, c0 = now(), cpu_now()
        rec: dict = {"step": step, "epoch": epoch, "t0": t0}
        if cfg.method == "cloud_only":
            payload = messages.pack_raw_images(x)
            msg = messages.pack(RoleMessage(Kind.RAW, step, epoch, y, payload))
            rec["t_sent"] = now()
            self._upload(step, msg)
            rec.update(t1=now(), bytes_up=len(msg), bytes_down=0, loss=None)
            return rec
        xf = as_input(hdata.normalize(x, self.mean, self.std), cfg)
        with autocast(cfg):
            act = self.edge(xf)
        check_finite(act.detach(), "cut activation", step, "edge")
        frame = self.codec.encode(as_wire(act.detach()), seed=step)
        msg = messages.pack(RoleMessage(Kind.ACT, step, epoch, y, frame))
        rec["bytes_up"] = len(msg)
        if cfg.method == "split":
            compute, cpu = now() - t0, cpu_now() - c0
            rec["t_sent"] = now()
            try:
                self.data.send(msg)
                reply = messages.unpack(self.data.recv())
            except TransferError:
                self._raise_abort(wait=2.0)
                raise
            if reply.kind != Kind.GRAD or reply.step != step:
                raise TransferError(
                    f"expected the gradient of step {step}, got {reply.kind.name} "
                    f"of step {reply.step}"
                )
            rec["t_grad"] = now()
            rec["bytes_down"] = len(reply.payload) + messages.HEADER_BYTES
            t_b, c_b = now(), cpu_now()
            grad = self.grad_codec.decode(reply.payload)
            self.opt.zero_grad(set_to_none=True)
            act.backward(grad.to(act.dtype))
            optimizer_step(self.opt, self.sched)
            compute += now() - t_b
            cpu += cpu_now() - c_b
            rec["loss"] = None
        else:  # hierarchical: upload first, then learn from the early exit; never wait
            rec["t_sent"], c_sent = now(), cpu_now()
            self._upload(step, msg)
            t_b, c_b = now(), cpu_now()
            with autocast(cfg):
                loss = F.cross_entropy(self.head(act), y)
            check_finite(loss.detach(), "exit loss", step, "edge")
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            optimizer_step(self.opt, self.sched)
            compute = (rec["t_sent"] - t0) + (now() - t_b)
            cpu = (c_sent - c0) + (cpu_now() - c_b)
            rec["loss"] = loss.item()
            rec["bytes_down"] = 0
        rec["idle_s"] = idle(compute, cfg.edge_slowdown)
        rec["compute_s"] = compute
        rec["cpu_s"] = cpu  # CPU time this process got during compute_s (edge_slowdown idles)
        rec["t1"] = now()
        return rec

    # -- evaluation ----------------------------------------------------------------------------

    @torch.no_grad()
    def _evaluate(self, epoch: int, test: hdata.ImageData) -> dict:
        """Exit accuracy here; the cloud's final accuracy is computed there from what we send."""
        cfg = self.cfg
        t0 = now()
        out: dict = {"eval_samples": len(test), "eval_start_s": t0}
        batches = []
        correct_exit = 0
        for mod in (self.edge, self.head):
            if mod is not None:
                mod.eval()
        for i in range(0, len(test), 256):
            x, y = test.images[i : i + 256], test.labels[i : i + 256]
            if cfg.method == "cloud_only":
                batches.append(
                    messages.pack(RoleMessage(Kind.RAW, -1, epoch, y, messages.pack_raw_images(x)))
                )
                continue
            with autocast(cfg):
                act = self.edge(as_input(hdata.normalize(x, self.mean, self.std), cfg))
                if self.head is not None:
                    correct_exit += int((self.head(act).argmax(1) == y).sum())
            frame = self.codec.encode(as_wire(act), seed=i)
            batches.append(messages.pack(RoleMessage(Kind.ACT, -1, epoch, y, frame)))
        for mod in (self.edge, self.head):
            if mod is not None:
                mod.train()
        out["exit_acc"] = correct_exit / len(test) if self.head is not None else None
        out["eval_split"] = test.split
        req = {"type": "eval", "epoch": epoch, "batches": len(batches)}
        msgs = [messages.pack_control(req), *batches]
        with self._lock:  # atomic with a reconnect, which resends what has no result yet
            if epoch not in self._evals_done:
                self._eval_pending[epoch] = msgs
            for m in msgs:
                self.ctrl_out.put(m)
        out["edge_eval_s"] = now() - t0
        return out

    @staticmethod
    def _merge_eval(by_epoch: dict, obj: dict) -> None:
        """Put the cloud's evaluation result into its epoch's entry."""
        entry = by_epoch[obj["epoch"]]
        entry.update(final_acc=obj["final_acc"], cloud_eval_s=obj["eval_s"])
        if obj.get("exit_acc") is not None:  # the deep-supervision control's exit (cloud side)
            entry["exit_acc"] = obj["exit_acc"]

    def _await_eval(self, epoch: int, epochs: list[dict]) -> None:
        """Wait for the cloud's evaluation of ``epoch`` (it trains the epoch first) and merge
        it, with any earlier result still queued, into ``epochs``."""
        by_epoch = {e["epoch"]: e for e in epochs}
        while True:
            obj = messages.unpack_json(self.inbox.get().payload)
            if obj.get("type") == "abort":
                self._abort, self._abort_kind = str(obj.get("error")), obj.get("kind")
                self._raise_abort()
            if obj.get("type") != "eval_result":
                raise ProtocolError(f"expected an evaluation result, got {obj.get('type')!r}")
            self._merge_eval(by_epoch, obj)
            if obj["epoch"] == epoch:
                return

    def _collect(self, epochs: list[dict]) -> dict:
        """Read the cloud's evaluation results and its records (sent after END)."""
        by_epoch = {e["epoch"]: e for e in epochs}
        while True:
            obj = messages.unpack_json(self.inbox.get().payload)
            if obj.get("type") == "eval_result":
                self._merge_eval(by_epoch, obj)
            elif obj.get("type") == "abort":
                self._abort, self._abort_kind = str(obj.get("error")), obj.get("kind")
                self._raise_abort()
            elif obj.get("type") == "records":
                for e in obj.get("epochs", []):
                    by_epoch[e["epoch"]]["cloud_train_loss"] = e["cloud_train_loss"]
                return obj
            else:
                raise ProtocolError(f"unexpected control message {obj.get('type')!r}")
