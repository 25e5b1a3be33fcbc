"""Issue 14's method options on real CIFAR-10: precision, the validation hold-out, the
deep-supervision control, and exact resume of runs evaluated every epoch."""

from __future__ import annotations

import pytest
import torch

from hierbench import data as hdata
from hierbench.errors import ConfigError
from hierbench.methods import RunConfig, run
from hierbench.methods.edge import EdgeRole
from hierbench.methods.plain import train_plain
from tests.methods.test_methods import _assert_same, _params, run_roles, small


@pytest.mark.parametrize("precision", ["fp32", "bf16-cl"])
def test_deep_supervision_equals_oracle(cifar10_root, precision):
    """cloud_only + aux_exit_weight: the whole model and the exit head trained end to end on
    final + w * exit loss, exactly as the plain loop does it; the exit's accuracy comes back."""
    cfg = small(
        cifar10_root, method="cloud_only", aux_exit_weight=0.5, augment=True, precision=precision
    )
    edge, cloud, rec = run_roles(cfg)
    ref = train_plain(cfg)
    assert cloud.head is not None and edge.head is None
    _assert_same(_params(cloud.net, cloud.head), _params(ref["model"], ref["head"]))
    cloud_losses = [s["loss"] for s in rec["cloud"]["steps"]]
    assert cloud_losses == [c for _, c in ref["losses"]]
    assert [s["exit_loss"] for s in rec["cloud"]["steps"]] == [e for e, _ in ref["losses"]]


def test_deep_supervision_differs_from_standard_and_reports_exit(cifar10_root):
    base = small(cifar10_root, method="cloud_only", eval="end", eval_samples=32)
    std = run(base, progress=False)
    aux = run(base.replace(aux_exit_weight=1.0), progress=False)
    assert std["epochs"][-1]["exit_acc"] is None
    assert 0.0 <= aux["epochs"][-1]["exit_acc"] <= 1.0
    # the exit's loss reaches the shared layers: the final loss path is not standard's
    assert [s["loss"] for s in std["cloud_steps"]][1:] != [s["loss"] for s in aux["cloud_steps"]][
        1:
    ]


@pytest.mark.parametrize("precision", ["bf16", "fp32-cl", "bf16-cl"])
def test_hierarchical_precision_equals_oracle(cifar10_root, precision):
    cfg = small(cifar10_root, method="hierarchical", codec="q8", precision=precision)
    edge, cloud, _ = run_roles(cfg)
    ref = train_plain(cfg)
    _assert_same(_params(edge.edge, edge.head), _params(ref["edge"], ref["head"]))
    _assert_same(_params(cloud.net), _params(ref["cloud"]))


def test_bf16_changes_the_numbers(cifar10_root):
    """The setting is applied (a bf16 run is not bitwise an fp32 one)."""
    a = train_plain(small(cifar10_root, method="cloud_only"))
    b = train_plain(small(cifar10_root, method="cloud_only", precision="bf16"))
    assert a["losses"] != b["losses"]


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="precision"):
        RunConfig(precision="fp16")
    with pytest.raises(ConfigError, match="aux_exit_weight"):
        RunConfig(method="hierarchical", aux_exit_weight=1.0)
    with pytest.raises(ConfigError, match="aux_exit_weight"):
        RunConfig(method="cloud_only", aux_exit_weight=-1.0)
    with pytest.raises(ConfigError, match="val_holdout"):
        RunConfig(val_holdout=-5)
    with pytest.raises(ConfigError, match="val_holdout"):
        RunConfig(val_holdout=2.5)
    # a one-edge split run does not checkpoint (a fleet's does: tests/fleet)
    with pytest.raises(ConfigError, match="one-edge run supports cloud_only and hierarchical"):
        run(RunConfig(method="split", checkpoint_every=3), progress=False)


def test_holdout_split_is_fixed_disjoint_and_complete(cifar10_root):
    train = hdata.load_dataset("cifar10", "train", str(cifar10_root), limit_per_class=20)
    rest, held = hdata.holdout_split(train, 50)
    rest2, held2 = hdata.holdout_split(train, 50)
    assert len(held) == 50 and len(rest) == len(train) - 50
    assert torch.equal(held.images, held2.images) and torch.equal(rest.labels, rest2.labels)
    rows = {bytes(x.numpy()) for x in torch.cat([rest.images, held.images]).flatten(1)}
    assert rows == {bytes(x.numpy()) for x in train.images.flatten(1)}
    assert held.split == "train-holdout"
    with pytest.raises(ValueError):
        hdata.holdout_split(train, len(train))


def test_holdout_run_evaluates_on_held_out_images(cifar10_root):
    cfg = small(
        cifar10_root,
        method="hierarchical",
        limit_per_class=10,
        val_holdout=36,
        eval="end",
        eval_samples=None,
        batches_per_epoch=None,
    )
    rec = run(cfg, progress=False)
    ep = rec["epochs"][-1]
    assert ep["eval_samples"] == 36 and ep["eval_split"] == "train-holdout"
    assert rec["steps_per_epoch"] == (100 - 36) // 16
    with pytest.raises(ConfigError, match="val_holdout"):
        run(cfg.replace(val_holdout=100), progress=False)


class _Crash(Exception):
    pass


@pytest.mark.parametrize(
    ("method", "crash_at"),
    [("hierarchical", 7), ("hierarchical", 10), ("cloud_only", 6)],
)
def test_epoch_evaluated_run_resumes_exactly(cifar10_root, tmp_path, monkeypatch, method, crash_at):
    """Interrupt a run evaluated every epoch (one process, both roles die together) mid-epoch
    or right after an epoch boundary; resume from the checkpoints: every per-epoch loss and
    accuracy, and the final parameters' losses per step, equal an uninterrupted run's."""
    cfg = small(
        cifar10_root,
        method=method,
        codec="q8",
        limit_per_class=8,
        batch_size=16,
        batches_per_epoch=None,  # 5 steps per epoch
        epochs=3,
        eval="epoch",
        eval_samples=48,
        augment=True,
        checkpoint_every=3,
        aux_exit_weight=0.5 if method == "cloud_only" else 0.0,
    )
    ref = run(cfg, progress=False)

    real = EdgeRole._train_step

    def crashing(self, step, epoch, x, y):
        if step == crash_at and not getattr(self, "resumed_from", None):
            raise _Crash(f"interrupted at step {step}")
        return real(self, step, epoch, x, y)

    monkeypatch.setattr(EdgeRole, "_train_step", crashing)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(_Crash):
        run(cfg, progress=False, checkpoint_dir=ckpt)
    assert (ckpt / "edge.pt").exists()
    resumed = run(cfg, progress=False, checkpoint_dir=ckpt, resume=True)
    keys = ("edge_train_loss", "cloud_train_loss", "exit_acc", "final_acc", "eval_samples")
    for a, b in zip(ref["epochs"], resumed["epochs"], strict=True):
        for k in keys:
            assert a.get(k) == b.get(k), (k, a, b)
    assert [s["loss"] for s in ref["cloud_steps"]] == [s["loss"] for s in resumed["cloud_steps"]]
    assert [s.get("loss") for s in ref["edge_steps"]] == [
        s.get("loss") for s in resumed["edge_steps"]
    ]
    assert len(ref["epochs"]) == 3 and all("final_acc" in e for e in resumed["epochs"])


@pytest.mark.parametrize(
    "op",
    [
        torch.nn.Conv2d(16, 24, 3, padding=1),
        torch.nn.Conv2d(16, 24, 7, stride=2, padding=3),
        torch.nn.BatchNorm2d(16),
        torch.nn.MaxPool2d(3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
    ],
    ids=["conv3x3", "conv7x7s2", "bn", "maxpool", "relu", "avgpool"],
)
def test_channels_last_ops_are_fp32_arithmetic(op):
    """fp32-cl is a memory format, not other arithmetic: each layer type of the models, forward
    and backward in channels_last, agrees with a float64 reference as closely as fp32 does."""
    import copy

    x = torch.randn(6, 16, 17, 17, generator=torch.Generator().manual_seed(0))
    res = {}
    for fmt in ("f64", "fp32", "cl"):
        m, xx = copy.deepcopy(op), x.clone()
        if fmt == "f64":
            m, xx = m.double(), xx.double()
        if fmt == "cl":
            m = m.to(memory_format=torch.channels_last)
            xx = xx.contiguous(memory_format=torch.channels_last)
        xx.requires_grad_(True)
        out = m(xx)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out))
        res[fmt] = [out.detach(), xx.grad] + [q.grad for q in m.parameters()]
    for got, want in zip(res["cl"], res["f64"], strict=True):
        assert ((got.double() - want).norm() / want.norm()).item() < 1e-5


@pytest.mark.parametrize(("model", "stem"), [("resnet18", "cifar"), ("vgg16", "imagenet")])
def test_channels_last_computes_fp32s_step(model, stem):
    """A whole training step in fp32-cl against float64: the loss agrees to fp32 rounding and
    the gradients to well under 1 % (a layout bug would be off by O(1)). Not to fp32's 1e-6:
    a rounding change can flip a max-pool's or ReLU's near-tie and route a little gradient
    elsewhere (measured: VGG-16, 1 thread, 0.5 % in the first layers; fp32 itself differs
    from float64 by up to 0.3 % on the CIFAR-stem ResNet-18 for the same reason)."""
    from hierbench.methods.parts import as_input, build_parts

    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.arange(6) % 10

    def step(precision, dtype=torch.float32):
        cfg = RunConfig(method="cloud_only", model=model, stem=stem, dataset="synthetic",
                        precision=precision, seed=3)  # fmt: skip
        net = build_parts(cfg)[0].to(dtype)
        net.train()
        loss = torch.nn.functional.cross_entropy(net(as_input(x, cfg).to(dtype)), y)
        loss.backward()
        return loss.item(), torch.cat([p.grad.double().flatten() for p in net.parameters()])

    l64, g64 = step("fp32", torch.float64)
    for precision in ("fp32", "fp32-cl"):
        loss, grad = step(precision)
        assert abs(loss - l64) < 1e-5
        assert ((grad - g64).norm() / g64.norm()).item() < 2e-2, precision
