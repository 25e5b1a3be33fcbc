"""The three methods on real CIFAR-10 in one process: they train, and compute what they claim."""

from __future__ import annotations

import threading

import pytest
import torch

from hierbench.methods import RunConfig, run
from hierbench.methods.channels import inprocess_channels
from hierbench.methods.cloud import CloudRole
from hierbench.methods.edge import EdgeRole
from hierbench.methods.plain import train_plain


def small(cifar10_root, **kw) -> RunConfig:
    base = dict(
        dataset="cifar10",
        data_root=str(cifar10_root),
        limit_per_class=8,
        batch_size=16,
        epochs=1,
        batches_per_epoch=3,
        link=None,
        eval="none",
        model="resnet18",
        stem="imagenet",
        cut="layer2",
        augment=False,
        codec="fp32",
    )
    base.update(kw)
    return RunConfig(**base)


def run_roles(cfg: RunConfig, cloud_cls=CloudRole):
    """Both roles over the engine's in-process channels; returns (edge, cloud, edge record)."""
    (ed, cd), (ec, cc) = inprocess_channels(cfg)
    cloud = cloud_cls(cd, cc)
    t = threading.Thread(target=cloud.run, daemon=True)
    t.start()
    edge = EdgeRole(cfg, ed, ec)
    rec = edge.run()
    t.join(timeout=60)
    assert not t.is_alive()
    for c in (ed, cd, ec, cc):
        c.close()
    return edge, cloud, rec


def _params(*modules):
    return [p.detach().clone() for m in modules if m is not None for p in m.parameters()]


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("method", ["cloud_only", "split", "hierarchical"])
def test_each_method_trains_in_one_and_two_processes(cifar10_root, method):
    """Memorise 32 real images over 6 epochs: the loss falls (the exit's too). The same run
    across two processes (loopback TCP, HMAC handshake) trains identically."""
    from hierbench.methods.runner import run_two_processes

    cfg = small(
        cifar10_root,
        method=method,
        codec="q8",
        link="200mbit/1ms",
        limit_per_class=4,
        batch_size=8,
        batches_per_epoch=4,
        epochs=6,
        lr=0.02,
        eval="end",
        eval_samples=64,
    )
    one = run(cfg, progress=False)
    first, last = one["epochs"][0], one["epochs"][-1]
    assert last["cloud_train_loss"] < 0.7 * first["cloud_train_loss"], one["epochs"]
    if method == "hierarchical":
        assert last["edge_train_loss"] < 0.8 * first["edge_train_loss"]
        assert 0.0 <= last["exit_acc"] <= 1.0
    assert 0.0 <= last["final_acc"] <= 1.0
    assert one["totals"]["batches"] == 24

    two = run_two_processes(cfg, progress=False)
    assert two["processes"] == 2
    for a, b in zip(one["epochs"], two["epochs"], strict=True):
        for key in ("cloud_train_loss", "edge_train_loss", "final_acc", "exit_acc"):
            assert a.get(key) == b.get(key), key
    assert one["totals"]["bytes_up"] == two["totals"]["bytes_up"]
    assert one["totals"]["bytes_down"] == two["totals"]["bytes_down"]


def test_cloud_only_equals_plain_training(cifar10_root):
    cfg = small(cifar10_root, method="cloud_only", augment=True)
    _, cloud, _ = run_roles(cfg)
    ref = train_plain(cfg)
    _assert_same(_params(cloud.net), _params(ref["model"]))


def test_split_fp32_gives_the_unsplit_models_gradients(cifar10_root):
    cfg = small(cifar10_root, method="split", codec="fp32", grad_codec="fp32")
    edge, cloud, rec = run_roles(cfg)
    ref = train_plain(cfg)  # the whole model, one optimizer: exact gradients at the cut
    _assert_same(_params(edge.edge, cloud.net), _params(ref["edge"], ref["cloud"]))
    assert all(s["bytes_down"] > 0 for s in rec["steps"])


def test_hierarchical_lossless_equals_plain_loop(cifar10_root):
    cfg = small(cifar10_root, method="hierarchical", codec="fp32")
    edge, cloud, _ = run_roles(cfg)
    ref = train_plain(cfg)
    _assert_same(_params(edge.edge, edge.head), _params(ref["edge"], ref["head"]))
    _assert_same(_params(cloud.net), _params(ref["cloud"]))


class _WrongLabelsCloud(CloudRole):
    """A cloud that trains on permuted labels: its loss differs from the honest cloud's."""

    def _train_step(self, msg, t_recv, nbytes):
        msg.labels = msg.labels.flip(0)
        return super()._train_step(msg, t_recv, nbytes)


def test_hierarchical_no_gradient_crosses_and_edge_ignores_cloud(cifar10_root):
    cfg = small(cifar10_root, method="hierarchical", codec="q8")
    edge_a, cloud_a, rec = run_roles(cfg)
    edge_b, cloud_b, _ = run_roles(cfg, _WrongLabelsCloud)
    # Nothing comes down: no step received bytes, and the cloud sent no data messages.
    assert all(s["bytes_down"] == 0 for s in rec["steps"])
    assert all(s["bytes_down"] == 0 for s in rec["cloud"]["steps"])
    # The edge's parameters do not depend on the cloud's loss ...
    _assert_same(_params(edge_a.edge, edge_a.head), _params(edge_b.edge, edge_b.head))
    # ... while the clouds did learn different things.
    assert any(
        not torch.equal(a, b)
        for a, b in zip(_params(cloud_a.net), _params(cloud_b.net), strict=True)
    )


@pytest.mark.parametrize("codec", ["q8", "q4+zstd1", "q2"])
def test_quantized_uploads_are_smaller(cifar10_root, codec):
    cfg = small(cifar10_root, method="hierarchical", codec=codec)
    _, _, rec = run_roles(cfg)
    fp32 = small(cifar10_root, method="hierarchical", codec="fp32")
    _, _, rec32 = run_roles(fp32)
    up = sum(s["bytes_up"] for s in rec["steps"])
    up32 = sum(s["bytes_up"] for s in rec32["steps"])
    assert up < up32 / 3


def test_hierarchical_edge_trains_through_an_outage(cifar10_root):
    """Link down for the first seconds: the edge keeps training (the backlog holds its
    uploads), the cloud catches up when the link returns, nothing is lost or duplicated."""
    outage_s = 3.0
    cfg = small(
        cifar10_root,
        method="hierarchical",
        codec="q8",
        link="50mbit/2ms",
        outages=((0.0, outage_s),),
        batches_per_epoch=6,
        epochs=2,
        slots=2,
    )
    rec = run(cfg, progress=False)
    total = rec["steps_per_epoch"] * cfg.epochs
    assert total >= 8
    link = [r for r in rec["link"]["messages"] if r["direction"] == "sent"]
    t_up = rec["link"]["epoch"]  # outages are relative to the data endpoint's creation
    edge_steps = rec["edge_steps"]
    cloud_steps = rec["cloud_steps"]
    assert [s["step"] for s in edge_steps] == list(range(total))
    assert [s["step"] for s in cloud_steps] == list(range(total))  # in order, none lost/duplicated
    assert sorted(r["seq"] for r in link) == list(range(len(link)))  # one message per seq
    assert len(link) == total + 1  # the batches + END
    first_delivery = min(s["t_recv"] for s in cloud_steps)
    # Nothing reached the cloud while the link was down ...
    assert first_delivery >= t_up + outage_s
    # ... while the edge went on: more steps done than the ring alone could hold.
    done_during_outage = sum(1 for s in edge_steps if s["t1"] < first_delivery)
    assert done_during_outage > cfg.slots + 1, done_during_outage


def _start_cloud(port: int, secret: str, ckpt, *extra: str):
    from hierbench.methods.runner import start_cloud_process

    proc, _, _ = start_cloud_process(
        secret,
        link="20mbit/1ms",
        listen=f"127.0.0.1:{port}",
        extra=("--checkpoint-dir", str(ckpt), *extra),
    )
    return proc


def _kill_test_config(root, **extra) -> RunConfig:
    """The run the kill-and-resume tests interrupt: 4 epochs of 5 batches, checkpoints every 3
    steps, an edge slowed down so that the kill lands mid-run."""
    return small(
        root,
        method="hierarchical",
        codec="q8",
        link="20mbit/1ms",
        batches_per_epoch=5,
        epochs=4,
        checkpoint_every=3,
        edge_slowdown=2.0,
        eval="end",
        eval_samples=32,
        **extra,
    )


def test_killed_cloud_resumes_from_its_checkpoint(cifar10_root, tmp_path):
    """SIGKILL the cloud process mid-run, restart it with --resume: the edge reconnects,
    replays what the checkpoint lacks, and the run completes exactly as an uninterrupted one."""
    import time

    from hierbench.methods.runner import run_edge

    cfg = _kill_test_config(cifar10_root)
    reference = run(cfg.replace(checkpoint_every=0), progress=False)
    port, secret = _free_port(), "kill-and-resume-test-secret"
    ckpt = tmp_path / "ckpt"
    first = _start_cloud(port, secret, ckpt)
    result: dict = {}

    def edge():
        try:
            result["record"] = run_edge(cfg, "127.0.0.1", port, secret.encode(), progress=False)
        except BaseException as exc:  # reported below
            result["error"] = exc

    t = threading.Thread(target=edge, daemon=True)
    t.start()
    deadline = time.monotonic() + 120
    while not (ckpt / "cloud.pt").exists():
        assert time.monotonic() < deadline and first.poll() is None, first.stderr.read()
        time.sleep(0.05)
    first.kill()  # SIGKILL: no clean shutdown, no last words
    first.wait()
    second = _start_cloud(port, secret, ckpt, "--resume")
    t.join(timeout=180)
    assert not t.is_alive()
    assert second.wait(timeout=60) == 0, second.stderr.read()
    assert "error" not in result, result.get("error")
    rec = result["record"]
    assert rec["totals"]["reconnects"] >= 1
    total = reference["totals"]["batches"]
    assert [s["step"] for s in rec["cloud_steps"]] == list(range(total))
    # Resumed training is the uninterrupted training: same loss at every step, same accuracy.
    assert [s["loss"] for s in rec["cloud_steps"]] == [s["loss"] for s in reference["cloud_steps"]]
    assert rec["epochs"][-1]["final_acc"] == reference["epochs"][-1]["final_acc"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _edge_cli_args(cfg: RunConfig) -> list[str]:
    """``hierbench edge`` arguments that rebuild ``cfg`` (checked against the record's config)."""
    args = ["--method", cfg.method, "--model", cfg.model, "--stem", cfg.stem]
    args += ["--dataset", cfg.dataset, "--data-root", cfg.data_root]
    args += ["--limit-per-class", str(cfg.limit_per_class), "--cut", cfg.cut]
    args += ["--exit-head", cfg.exit_head, "--codec", cfg.codec, "--grad-codec", cfg.grad_codec]
    args += ["--link", cfg.link or "none", "--batch-size", str(cfg.batch_size)]
    args += ["--epochs", str(cfg.epochs), "--batches-per-epoch", str(cfg.batches_per_epoch)]
    args += [
        "--lr",
        repr(cfg.lr),
        "--seed",
        str(cfg.seed),
        "--edge-slowdown",
        repr(cfg.edge_slowdown),
    ]
    args += ["--threads", str(cfg.threads_edge), "--eval", cfg.eval]
    args += ["--eval-samples", str(cfg.eval_samples or 0), "--slots", str(cfg.slots)]
    args += ["--checkpoint-every", str(cfg.checkpoint_every)]
    return args + ([] if cfg.augment else ["--no-augment"])


def test_killed_edge_resumes_from_its_checkpoint(cifar10_root, tmp_path):
    """SIGKILL the edge process mid-run (after its second checkpoint), restart it with --resume
    against the still-running cloud: the cloud takes the new edge, asks for the step it needs
    next, receives every step exactly once and in order, and both roles' per-step losses and
    the final accuracies equal an uninterrupted run's (augmentation on: the data position
    restores the augmentation stream too)."""
    import json
    import os
    import subprocess
    import sys
    import time

    cfg = _kill_test_config(cifar10_root, augment=True)
    reference = run(cfg.replace(checkpoint_every=0), progress=False)
    port, secret = _free_port(), "edge-kill-and-resume-test-secret"
    ckpt, out = tmp_path / "ckpt", tmp_path / "edge.json"
    cloud = _start_cloud(port, secret, ckpt)
    edge_cmd = [sys.executable, "-m", "hierbench.cli", "edge", "--connect", f"127.0.0.1:{port}"]
    edge_cmd += [*_edge_cli_args(cfg), "--checkpoint-dir", str(ckpt), "--out", str(out), "--quiet"]
    env = dict(os.environ, HIERBENCH_SECRET=secret)

    def start_edge(*extra):
        return subprocess.Popen(
            [*edge_cmd, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
        )

    try:
        first = start_edge()
        deadline = time.monotonic() + 120
        saved = []  # the edge checkpoint's mtimes seen: kill after its second save
        while len(saved) < 2:
            assert time.monotonic() < deadline and first.poll() is None, first.communicate()
            with_ckpt = ckpt / "edge.pt"
            if with_ckpt.exists() and with_ckpt.stat().st_mtime_ns not in saved:
                saved.append(with_ckpt.stat().st_mtime_ns)
            time.sleep(0.02)
        time.sleep(0.3)  # the edge (and the cloud) go on past the checkpoint
        first.kill()  # SIGKILL: no clean shutdown, unacknowledged uploads only in the checkpoint
        first.wait()
        assert not out.exists()
        second = start_edge("--resume")
        stdout, stderr = second.communicate(timeout=180)
        assert second.returncode == 0, stderr[-3000:]
        assert cloud.wait(timeout=60) == 0, cloud.stderr.read()
        assert "an edge reconnected" in cloud.stderr.read()
    finally:
        for proc in [cloud, *(p for p in (locals().get("first"), locals().get("second")) if p)]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    rec = json.loads(out.read_text())
    assert rec["config"] == cfg.to_dict()
    total = reference["totals"]["batches"]
    assert rec["edge_steps"][0]["step"] == 0  # the resumed edge's record holds the whole run
    assert 6 <= rec["edge_steps"][-1]["step"] == total - 1
    # The cloud trained every step exactly once, in order, across the edge's restart ...
    assert [s["step"] for s in rec["cloud_steps"]] == list(range(total))
    assert [s["step"] for s in rec["edge_steps"]] == list(range(total))
    # ... and the resumed run is the uninterrupted run, on both sides.
    assert [s["loss"] for s in rec["cloud_steps"]] == [s["loss"] for s in reference["cloud_steps"]]
    assert [s["loss"] for s in rec["edge_steps"]] == [s["loss"] for s in reference["edge_steps"]]
    for key in ("final_acc", "exit_acc", "edge_train_loss", "cloud_train_loss"):
        assert [e.get(key) for e in rec["epochs"]] == [e.get(key) for e in reference["epochs"]], key


def test_resume_both_roles_in_one_process(cifar10_root, tmp_path):
    """Both roles checkpoint into one folder; a second run with resume=True starts each from its
    checkpoint (the edge uploads only what the cloud lacks) and ends as the uninterrupted run."""
    cfg = small(
        cifar10_root,
        method="hierarchical",
        codec="q8",
        augment=True,
        batches_per_epoch=4,
        epochs=2,
        checkpoint_every=3,
        eval="end",
        eval_samples=32,
    )
    reference = run(cfg.replace(checkpoint_every=0), progress=False)
    run(cfg, progress=False, checkpoint_dir=tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"edge.pt", "cloud.pt"}
    again = run(cfg, progress=False, checkpoint_dir=tmp_path, resume=True)
    assert [s["step"] for s in again["cloud_steps"]] == list(range(8))
    for side in ("edge_steps", "cloud_steps"):
        assert [s["loss"] for s in again[side]] == [s["loss"] for s in reference[side]], side
    for a, b in zip(reference["epochs"], again["epochs"], strict=True):
        untimed = [k for k in a if not k.endswith("_s")]
        assert {k: a[k] for k in untimed} == {k: b[k] for k in untimed}


def test_resume_errors_say_what_to_do(cifar10_root, tmp_path):
    from hierbench.errors import ConfigError

    cfg = small(cifar10_root, method="hierarchical", checkpoint_every=2, batches_per_epoch=2)
    with pytest.raises(ConfigError, match=r"no edge checkpoint.*start without --resume"):
        run(cfg, progress=False, checkpoint_dir=tmp_path / "missing", resume=True)
    with pytest.raises(ConfigError, match="--resume needs --checkpoint-dir"):
        run(cfg, progress=False, resume=True)
    with pytest.raises(ConfigError, match="checkpoint_every is 0"):
        run(cfg.replace(checkpoint_every=0), progress=False, checkpoint_dir=tmp_path)
    run(cfg.replace(epochs=2), progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"another run \(lr: 0\.05 there, 0\.1 here"):
        run(cfg.replace(epochs=2, lr=0.1), progress=False, checkpoint_dir=tmp_path, resume=True)
