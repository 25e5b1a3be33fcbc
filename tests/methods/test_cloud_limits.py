"""The cloud role against an authenticated but hostile (or buggy) edge, and across a connection
cut during an evaluation, in one process over the engine's in-process channels (issue 15):

* item 8: the cloud's receive limits come from the run config, not the engine's and codec's
  1 GiB defaults: a message over one training batch is refused by the engine before a slot is
  sized for it, a small frame declaring a huge tensor is refused by the codec before it is
  decompressed, and a decoded activation must have the cut's shape;
* item 9: an evaluation cut off by a reconnect is resent by the edge and answered by the cloud,
  so the run's accuracies equal an uninterrupted run's (docs/architecture.md says so).
"""

from __future__ import annotations

import queue
import threading

import torch

from hierbench.codec import ActivationCodec
from hierbench.errors import CodecError, ProtocolError, TransferError
from hierbench.methods import messages, run
from hierbench.methods.channels import inprocess_channels, receive_limits
from hierbench.methods.cloud import CloudRole
from hierbench.methods.edge import EdgeRole
from hierbench.methods.messages import Kind, RoleMessage
from hierbench.methods.parts import build_parts
from tests.methods.test_methods import small

T = 60.0


def _hello(cfg, spe: int) -> bytes:
    return messages.pack_control(
        {"type": "hello", "config": cfg.to_dict(), "steps_per_epoch": spe, "evals_done": []}
    )


class _Cloud:
    """A CloudRole on its own thread; the test plays the edge on the other ends."""

    def __init__(self, cfg):
        (self.ed, cd), (self.ec, cc) = inprocess_channels(cfg)
        self.role = CloudRole(cd, cc)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()
        self.ec.send(_hello(cfg, cfg.batches_per_epoch))
        welcome = messages.unpack_json(messages.unpack(self.ec.recv(timeout=T)).payload)
        assert welcome == {"type": "welcome", "next_step": 0}

    def _main(self) -> None:
        try:
            self.role.run()
        except BaseException as exc:
            self.error = exc

    def fails_with(self, cls, match: str) -> BaseException:
        self.thread.join(timeout=T)
        assert not self.thread.is_alive()
        assert isinstance(self.error, cls), repr(self.error)
        assert match in str(self.error), self.error
        for c in (self.ed, self.ec):
            c.close(timeout=0)
        return self.error


def _cut_shape(cfg) -> tuple[int, ...]:
    return tuple(build_parts(cfg)[0].cut_shape(cfg.cut))


def test_limits_follow_the_run_config(cifar10_root):
    cfg = small(cifar10_root, method="hierarchical", codec="q8")
    shape = _cut_shape(cfg)
    limits = receive_limits(cfg, shape)
    fp32 = cfg.batch_size * torch.Size(shape).numel() * 4  # the biggest encoding of a batch
    assert fp32 < limits["data"] < 2 * fp32 + (1 << 20)
    assert limits["data"] < limits["control"] < 64 << 20  # far below the engine's 1 GiB
    assert limits["codec"] < 64 << 20


def test_a_message_over_one_training_batch_is_refused(cifar10_root):
    """Before: the cloud's endpoints took up to 1 GiB per message (max_frame_bytes), in each of
    its receive slots."""
    cfg = small(cifar10_root, method="hierarchical", codec="q8")
    cloud = _Cloud(cfg)
    limit = receive_limits(cfg, _cut_shape(cfg))["data"]
    cloud.ed.send(bytes(limit + 1))
    cloud.fails_with(TransferError, f"over this endpoint's receive limit of {limit}")


def test_a_small_frame_declaring_a_huge_activation_is_refused_before_decoding(cifar10_root):
    """A 33 KB zstd frame of a 64 MiB tensor (the issue's 1 GiB one, smaller): the cloud's codec
    refuses it by the run's activation size (before: it decoded with the default 1 GiB
    ``max_frame_size`` and allocated the whole tensor)."""
    cfg = small(cifar10_root, method="hierarchical", codec="q8")
    cloud = _Cloud(cfg)
    frame = ActivationCodec("fp32+zstd1").encode(torch.zeros(16, 1 << 20))
    assert len(frame) < 64 << 10
    labels = torch.zeros(cfg.batch_size, dtype=torch.long)
    cloud.ed.send(messages.pack(RoleMessage(Kind.ACT, 0, 0, labels, frame)))
    err = cloud.fails_with(CodecError, "max_frame_size")
    limit = receive_limits(cfg, _cut_shape(cfg))["codec"]
    assert str(limit) in str(err)


def test_an_activation_of_the_wrong_shape_is_refused(cifar10_root):
    cfg = small(cifar10_root, method="hierarchical", codec="q8")
    cloud = _Cloud(cfg)
    shape = _cut_shape(cfg)
    wrong = (cfg.batch_size, shape[0], shape[1] + 1, shape[2])
    frame = ActivationCodec("q8").encode(torch.randn(wrong))
    labels = torch.zeros(cfg.batch_size, dtype=torch.long)
    cloud.ed.send(messages.pack(RoleMessage(Kind.ACT, 0, 0, labels, frame)))
    cloud.fails_with(ProtocolError, f"an activation of shape {wrong}")


# ---- item 9: evaluations are resent after a reconnect ------------------------------------------


class _CutDuringEvaluation:
    """The cloud's first control channel: it passes messages through until the cloud has taken
    the first evaluation batch, then cuts both of the cloud's channels (as a lost connection
    does); counts the evaluation requests the cloud received on any channel."""

    def __init__(self, channel, data, seen: list):
        self.channel, self.data, self.seen = channel, data, seen
        self.cut = False

    def recv(self, timeout=None):
        raw = self.channel.recv(timeout=timeout)
        msg = messages.unpack(raw)
        if msg.kind == Kind.CONTROL:
            if messages.unpack_json(msg.payload).get("type") == "eval":
                self.seen.append("eval")
        elif self.seen and not self.cut:  # the first evaluation batch
            self.cut = True
            for c in (self.channel, self.data):
                c.close(timeout=0)
            raise TransferError("connection cut by the test during an evaluation")
        return raw

    def __getattr__(self, name):
        return getattr(self.channel, name)


class _Counting:
    def __init__(self, channel, seen: list):
        self.channel, self.seen = channel, seen

    def recv(self, timeout=None):
        raw = self.channel.recv(timeout=timeout)
        msg = messages.unpack(raw)
        if msg.kind == Kind.CONTROL and messages.unpack_json(msg.payload).get("type") == "eval":
            self.seen.append("eval")
        return raw

    def __getattr__(self, name):
        return getattr(self.channel, name)


def test_an_evaluation_cut_off_by_a_reconnect_is_resent(cifar10_root):
    """The connection is cut while the cloud receives epoch 0's evaluation: the edge reconnects,
    resends the evaluation (request and batches) that has no result yet, the cloud (which owes
    it: its hello's ``evals_done`` lacks epoch 0) answers it, and every accuracy equals the
    uninterrupted run's."""
    cfg = small(
        cifar10_root,
        method="hierarchical",
        codec="q8",
        epochs=2,
        batches_per_epoch=3,
        checkpoint_every=3,
        eval="epoch",
        eval_samples=600,  # 3 evaluation batches of up to 256 images
    )
    reference = run(cfg, progress=False)
    seen: list[str] = []
    waiting: queue.Queue = queue.Queue()

    def reconnect():  # the edge's side of a new pair of connections; the cloud gets the other
        (ed, cd), (ec, cc) = inprocess_channels(cfg)
        waiting.put((cd, _Counting(cc, seen)))
        return ed, ec

    def reaccept():
        return waiting.get(timeout=T)

    (ed, cd), (ec, cc) = inprocess_channels(cfg)
    cut = _CutDuringEvaluation(cc, cd, seen)
    cloud = CloudRole(cd, cut, reaccept=reaccept)
    error: list[BaseException] = []

    def cloud_main():
        try:
            cloud.run()
        except BaseException as exc:
            error.append(exc)

    t = threading.Thread(target=cloud_main, daemon=True)
    t.start()
    edge = EdgeRole(cfg, ed, ec, reconnect=reconnect)
    rec = edge.run()
    t.join(timeout=T)
    assert not t.is_alive() and not error, error
    for c in (edge.data, edge.control, cloud.data, cloud.control):
        c.close()
    assert cut.cut and cloud.reconnects == 1 and rec["reconnects"] == 1
    assert seen == ["eval", "eval", "eval"], seen  # epoch 0's twice (resent), then epoch 1's
    for key in ("final_acc", "exit_acc"):
        assert [e[key] for e in rec["epochs"]] == [e[key] for e in reference["epochs"]], key
    assert [s["loss"] for s in rec["cloud"]["steps"]] == [
        s["loss"] for s in reference["cloud_steps"]
    ]
