"""The cloud role: receives the config, trains its part in arrival order, reports back.

What it does per method: :mod:`hierbench.methods`; checkpoint and resume:
:mod:`hierbench.methods.checkpoint`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from hierbench import data as hdata
from hierbench import models
from hierbench.codec import ActivationCodec, CodecConfig
from hierbench.errors import (
    ConfigError,
    NonFiniteError,
    ProtocolError,
    TransferError,
    TransferTimeout,
)
from hierbench.methods import messages
from hierbench.methods.background import Channel, cpu_now, now
from hierbench.methods.checkpoint import CLOUD_CHECKPOINT, atomic_save, load_checkpoint
from hierbench.methods.config import RunConfig
from hierbench.methods.messages import Kind, RoleMessage
from hierbench.methods.parts import (
    NORMALIZATION,
    ProgressFn,
    as_input,
    as_wire,
    autocast,
    build_parts,
    check_finite,
    make_optimizer,
    mean_loss,
    optimizer_step,
    synthetic_input,
    warm_up,
)


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
            "head": None if self.head is None else self.head.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "steps": steps,
            "epochs": epochs,
            "losses": losses,
        }
        atomic_save(state, self.checkpoint)
        self.control.send(messages.pack_control({"type": "ack", "next_step": next_step}))

    def _load(self):
        """The checkpoint's state, or None if there is none yet (the cloud died before its first
        checkpoint: the edge still keeps every upload, so the run restarts from step 0)."""
        if not self.checkpoint.exists():
            self._say(f"no checkpoint at {self.checkpoint} yet: the cloud starts at step 0")
            return None
        state = load_checkpoint(self.checkpoint, self.cfg, "cloud")
        self.net.load_state_dict(state["net"])
        if self.head is not None:
            self.head.load_state_dict(state["head"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        return state

    def _say(self, text: str) -> None:
        if self.log is not None:
            self.log(f"cloud: {text}")

    def _control_json(self, control: Channel | None = None, timeout: float | None = None) -> dict:
        msg = messages.unpack((control or self.control).recv(timeout=timeout))
        if msg.kind != Kind.CONTROL:
            raise ProtocolError(f"expected a control message, got {msg.kind.name}")
        return messages.unpack_json(msg.payload)

    def _welcome(self, control: Channel, hello: dict, next_step: int) -> None:
        """Answer a hello: the step this cloud needs next; note which evaluations are owed."""
        control.send(messages.pack_control({"type": "welcome", "next_step": next_step}))
        done = set(hello.get("evals_done", []))
        spe, cfg = self.spe, self.cfg
        self._owed = [
            e
            for e in range(cfg.epochs)
            if (cfg.eval == "epoch" or (cfg.eval == "end" and e == cfg.epochs - 1))
            and next_step >= (e + 1) * spe
            and e not in done
        ]

    def _first_hello(self) -> dict:
        """The first edge's hello. An edge that goes away before it has sent one (killed while
        starting, or a connection that fails) costs nothing: with ``reaccept`` the cloud closes
        those channels and waits for the next edge instead of exiting."""
        while True:
            try:
                hello = self._control_json()
            except TransferError as exc:
                if self.reaccept is None:
                    raise
                self._say(f"lost the edge before its hello ({exc}); waiting for an edge")
                self._drop(self.data, self.control)
                self.data, self.control = self._reaccept("before its hello")
                continue
            if hello.get("type") != "hello":
                raise ProtocolError(f"expected hello, got {hello.get('type')!r}")
            return hello

    def _may_wait_for_the_edge(self, expected: int) -> bool:
        """Whether a lost edge is waited for (else its TransferError ends the run): with
        ``reaccept``, when the run checkpoints (the edge resumes), or when no step has been
        trained yet (a new edge starts the same run from step 0: nothing is lost)."""
        return self.reaccept is not None and (self.cfg.checkpoint_every > 0 or expected == 0)

    def run(self) -> dict:
        hello = self._first_hello()
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
        # cloud_only: the whole model (and the deep-supervision control's exit head), else its part
        model, _, self.net, self.head = build_parts(cfg)
        if cfg.method != "cloud_only":
            self.head = None  # hierarchical's exit head is the edge's
        self.aux = None  # deep supervision: (layers up to the cut, the rest), sharing self.net
        params = list(self.net.parameters())
        if self.head is not None:
            self.aux = models.split(model, cfg.cut)
            params += list(self.head.parameters())
        self.opt, self.sched = make_optimizer(cfg, params, total)
        if cfg.method == "cloud_only":
            shape = (cfg.batch_size, 3, cfg.input_size, cfg.input_size)
        else:
            shape = (cfg.batch_size, *model.cut_shape(cfg.cut))
        warm_up([self.net], synthetic_input(shape), None, cfg.num_classes, cfg)
        if self.aux is not None:  # and the exit head, on the layers before the cut
            warm_up([self.aux[0]], synthetic_input(shape), self.head, cfg.num_classes, cfg)
        # Receive limits from the config, not the engine's and codec's 1 GiB defaults: an
        # activation has a known shape, so nothing bigger is accepted or allocated.
        from hierbench.methods.channels import receive_limits

        if cfg.method == "cloud_only":
            self.cut_shape = (3, cfg.input_size, cfg.input_size)
        else:
            self.cut_shape = tuple(model.cut_shape(cfg.cut))
        self.limits = receive_limits(cfg, self.cut_shape)
        self._limit_channels(self.data, self.control)
        self.codec = ActivationCodec(
            CodecConfig.parse(cfg.codec, max_frame_size=self.limits["codec"])
        )
        self.grad_codec = ActivationCodec(cfg.grad_codec)
        steps, epochs, losses = [], [], []
        expected = 0
        state = self._load() if self.resume else None
        if state is not None:
            expected = int(state["next_step"])
            steps, epochs, losses = state["steps"], state["epochs"], state["losses"]
            self._say(f"resumed from {self.checkpoint} at step {expected}")
        try:  # the edge may have gone while this cloud built and warmed up its part
            self._welcome(self.control, hello, expected)
        except TransferError as exc:
            if not self._may_wait_for_the_edge(expected):
                raise
            self._accept_edge(exc, expected)
        every = cfg.checkpoint_every if self.checkpoint is not None else 0
        while True:
            try:
                if self._owed:  # evaluations owed to the edge come first (the model is ready)
                    self._evaluate(self._owed[0])
                    self._owed.pop(0)
                    continue
                raw = self.data.recv()
                t_recv = now()
                msg = messages.unpack(raw)
                if msg.kind == Kind.END:
                    if expected != total:
                        raise ProtocolError(f"END after {expected} of {total} steps")
                    result = {"type": "records", "steps": steps, "epochs": epochs, "t_end": now()}
                    self.control.send(messages.pack_control(result))
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
                    epochs.append({"epoch": epoch, "cloud_train_loss": mean_loss(losses)})
                    losses = []
                    if cfg.eval == "epoch" or (cfg.eval == "end" and epoch == cfg.epochs - 1):
                        self._owed.append(epoch)
                boundary = cfg.eval == "epoch" and expected % spe == 0  # before its evaluation
                if every and (expected % every == 0 or boundary) and expected < total:
                    self._save(expected, steps, epochs, losses)
            except (ProtocolError, NonFiniteError) as exc:  # tell the edge: no reconnect helps
                kind = "non_finite" if isinstance(exc, NonFiniteError) else "protocol"
                abort = {"type": "abort", "error": str(exc), "kind": kind}
                with contextlib.suppress(BaseException):
                    self.control.send(messages.pack_control(abort))
                    self.control.close(timeout=5.0)  # deliver it before this process exits
                raise
            except TransferError as exc:
                if not self._may_wait_for_the_edge(expected):
                    raise
                self._accept_edge(exc, expected)

    def _accept_edge(self, why: BaseException, next_step: int) -> None:
        """The edge went away: wait for it (or its restart), check its hello, welcome it."""
        self._say(f"lost the edge at step {next_step} ({why}); waiting for it to reconnect")
        self._drop(self.data, self.control)
        while True:
            data, control = self._reaccept(f"at step {next_step}")
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
                    self._limit_channels(data, control)
                    self._welcome(control, hello, next_step)
                    self.data, self.control = data, control
                    self.reconnects += 1
                    self._say(f"an edge reconnected; it resumes uploads at step {next_step}")
                    return
                control.send(messages.pack_control({"type": "welcome", "error": problem}))
                control.close()
                data.close(timeout=0)
                self._say(f"refused an edge: {problem}")
            except (TransferError, OSError) as exc:  # a stale or half-made connection
                self._drop(data, control)
                self._say(f"a reconnect attempt failed ({exc}); waiting again")

    def _reaccept(self, when: str) -> tuple[Channel, Channel]:
        """The next edge's channels; a connection that fails is logged and waited past."""
        while True:
            try:
                return self.reaccept()
            except TransferTimeout as exc:
                raise TransferTimeout(
                    f"the edge went away {when} and did not come back: {exc}"
                ) from exc
            except TransferError as exc:  # a connection that failed its handshake
                self._say(f"a reconnect attempt failed ({exc}); waiting again")

    @staticmethod
    def _drop(*channels: Channel) -> None:
        """Close channels whose peer is gone, dropping what is queued."""
        for c in channels:
            with contextlib.suppress(BaseException):
                c.close(timeout=0)

    def _limit_channels(self, data: Channel, control: Channel) -> None:
        for channel, key in ((data, "data"), (control, "control")):
            if hasattr(channel, "limit"):
                channel.limit(self.limits[key])

    def _forward_input(self, msg: RoleMessage) -> torch.Tensor:
        if msg.kind == Kind.RAW:
            images = messages.unpack_raw_images(msg.payload, msg.labels.numel())
            return as_input(hdata.normalize(images, self.mean, self.std), self.cfg)
        if msg.kind == Kind.ACT:
            x = self.codec.decode(msg.payload)
            n = 0 if msg.labels is None else msg.labels.numel()
            if tuple(x.shape[1:]) != self.cut_shape or x.shape[0] != n:
                raise ProtocolError(
                    f"an activation of shape {tuple(x.shape)} for {n} labels; this run's cut "
                    f"{self.cfg.cut} gives (n, {', '.join(map(str, self.cut_shape))})"
                )
            return as_input(x, self.cfg)
        raise TransferError(f"unexpected {msg.kind.name} message on the data channel")

    def _outputs(self, x: torch.Tensor):
        """(final logits, exit logits or None): the exit only in the deep-supervision control."""
        if self.aux is None:
            return self.net(x), None
        act = self.aux[0](x)
        return self.aux[1](act), self.head(act)

    def _train_step(self, msg: RoleMessage, t_recv: float, nbytes: int) -> dict:
        t0, c0 = now(), cpu_now()
        x = self._forward_input(msg)
        split = self.cfg.method == "split"
        if split:
            x.requires_grad_(True)
        with autocast(self.cfg):
            out, out_exit = self._outputs(x)
            loss = F.cross_entropy(out, msg.labels)
            total = loss
            if out_exit is not None:
                loss_exit = F.cross_entropy(out_exit, msg.labels)
                total = loss + self.cfg.aux_exit_weight * loss_exit
        check_finite(total.detach(), "loss", msg.step, "cloud")
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        optimizer_step(self.opt, self.sched)
        rec = {
            "step": msg.step,
            "t_recv": t_recv,
            "t0": t0,
            "bytes_up": nbytes,
            "loss": loss.item(),
            "bytes_down": 0,
        }
        if out_exit is not None:
            rec["exit_loss"] = loss_exit.item()
        if split:
            frame = self.grad_codec.encode(as_wire(x.grad))
            reply = messages.pack(RoleMessage(Kind.GRAD, msg.step, msg.epoch, None, frame))
            rec["t_grad_sent"] = now()
            self.data.send(reply)
            rec["bytes_down"] = len(reply)
        rec["t1"], rec["cpu_s"] = now(), cpu_now() - c0
        return rec

    @torch.no_grad()
    def _evaluate(self, epoch: int) -> None:
        req = self._control_json()
        if req.get("type") != "eval" or req.get("epoch") != epoch:
            raise ProtocolError(f"expected the evaluation of epoch {epoch}, got {req}")
        t0 = now()
        mods = [m for m in (self.net, self.head) if m is not None]
        for m in mods:
            m.eval()
        correct = correct_exit = n = 0
        for _ in range(int(req["batches"])):
            msg = messages.unpack(self.control.recv())
            x = self._forward_input(msg)
            with autocast(self.cfg):
                out, out_exit = self._outputs(x)
            correct += int((out.argmax(1) == msg.labels).sum())
            if out_exit is not None:
                correct_exit += int((out_exit.argmax(1) == msg.labels).sum())
            n += msg.labels.numel()
        for m in mods:
            m.train()
        res = {
            "type": "eval_result",
            "epoch": epoch,
            "final_acc": correct / max(n, 1),
            "eval_s": now() - t0,
        }
        if self.head is not None:
            res["exit_acc"] = correct_exit / max(n, 1)
        self.control.send(messages.pack_control(res))
