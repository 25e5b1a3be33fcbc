"""Split learning over hierbench's codec and transfer engine: an edge and a cloud process.

The edge runs the first layers of a small CNN on real CIFAR-10 images and sends the cut
activations (8-bit, per group of 128) and the labels up; the cloud decodes them, runs the rest of
the network and the loss, and sends the activations' gradient back (fp16) for the edge's backward.
Two processes over loopback TCP (HMAC handshake, CRC-checked frames), public API only:
``hierbench.codec.ActivationCodec`` and ``hierbench.transfer.listen`` / ``connect``.

    pip install "hierbench-<version>-<tags>.whl[examples]"     # torch, numpy, zstandard, pillow
    python examples/split_learning.py [--data-root DIR] [--per-class 100] [--epochs 2] [--check]

Data: a CIFAR-10 image folder (``train/<class>/*.jpg``, ``test/<class>/*.jpg``, read with
Pillow): ``--data-root``, else ``$HIERBENCH_CIFAR10_ROOT``, else ``../shared/datasets/cifar10-jpeg``
beside this repository. The first ``--per-class`` training images of each class (sorted by name)
train; the first ``--test-per-class`` test images of each class evaluate.

``--check`` (what CI runs) exits non-zero unless the training loss fell (mean of the last quarter
of steps below the first quarter's) and test accuracy beats chance (10 classes) by 5 points.
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import hierbench
from hierbench.codec import ActivationCodec
from hierbench.transfer import TransferClosed, connect, listen

# CIFAR-10's classes, in its label order
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
HEADER = struct.Struct("<BI")  # step kind (0 train, 1 eval), batch size; then the labels (uint8)
REPLY = struct.Struct("<dI")  # the cloud's loss (sum over the batch) and number correct
SECRET_ENV = "SPLIT_EXAMPLE_SECRET"


def edge_model() -> nn.Module:
    """3×32×32 -> 64×8×8: what the edge computes before the cut."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
    )  # fmt: skip


def cloud_model() -> nn.Module:
    """64×8×8 -> 10 logits: the rest of the network, after the cut."""
    return nn.Sequential(
        nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10),
    )  # fmt: skip


def load_split(root: Path, split: str, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``per_class`` images of each class: (N, 3, 32, 32) float, normalised; labels."""
    from PIL import Image  # the example's one dependency beyond the wheel's (the [examples] extra)

    images, labels = [], []
    for label, name in enumerate(CLASSES):
        folder = root / split / name
        files = sorted(folder.glob("*.jpg")) + sorted(folder.glob("*.png"))
        if len(files) < per_class:
            raise SystemExit(f"{folder}: {len(files)} images, need {per_class} (--per-class)")
        for f in files[:per_class]:
            with Image.open(f) as im:
                images.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255)
    return (x - MEAN) / STD, torch.tensor(labels)


# -- the cloud process -------------------------------------------------------------------------


def run_cloud(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed + 1)
    model = cloud_model()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    up, down = ActivationCodec(args.up_codec), ActivationCodec(args.down_codec)
    with listen(port=0, secret=os.environ[SECRET_ENV]) as lst:
        print(lst.port, flush=True)  # the edge reads the port from our stdout
        link = lst.accept(timeout=60)
    with link:
        while True:
            try:
                head = link.recv().data
            except TransferClosed:
                return 0  # the edge is done
            kind, n = HEADER.unpack_from(head)
            y = torch.frombuffer(bytearray(head[HEADER.size :]), dtype=torch.uint8).long()
            act = up.decode(link.recv().data)  # a malformed frame raises CodecError
            if kind not in (0, 1) or len(y) != n or act.shape != (n, 64, 8, 8):
                raise ValueError(f"bad step: kind {kind}, {len(y)} labels, activations {act.shape}")
            model.train(kind == 0)
            if kind == 0:
                act.requires_grad_()
                logits = model(act)
                loss = F.cross_entropy(logits, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                link.send(down.encode(act.grad))
            else:
                with torch.no_grad():
                    logits = model(act)
                    loss = F.cross_entropy(logits, y)
            correct = int((logits.argmax(1) == y).sum())
            link.send(REPLY.pack(float(loss.detach()) * n, correct))


# -- the edge process (the parent) -------------------------------------------------------------


def _step(link, up, kind: int, act: torch.Tensor, y: torch.Tensor) -> None:
    link.send(HEADER.pack(kind, len(y)) + y.to(torch.uint8).numpy().tobytes())
    link.send(up.encode(act.detach()))


def run_edge(args: argparse.Namespace) -> int:
    root = Path(args.data_root)
    if not (root / "train").is_dir():
        raise SystemExit(f"no CIFAR-10 image folder at {root}: set --data-root")
    t0 = time.perf_counter()
    x_train, y_train = load_split(root, "train", args.per_class)
    x_test, y_test = load_split(root, "test", args.test_per_class)
    print(
        f"hierbench {hierbench.__version__} from {Path(hierbench.__file__).parent}\n"
        f"data: {len(y_train)} train / {len(y_test)} test images from {root} "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    torch.manual_seed(args.seed)
    model = edge_model()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    up, down = ActivationCodec(args.up_codec), ActivationCodec(args.down_codec)

    secret = secrets.token_hex(16)
    env = {**os.environ, SECRET_ENV: secret}
    cmd = [sys.executable, __file__, *sys.argv[1:], "--role", "cloud"]
    cloud = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    try:
        port = int(cloud.stdout.readline())
        losses, t1 = [], time.perf_counter()
        with connect("127.0.0.1", port, secret, timeout=60) as link:
            for epoch in range(args.epochs):
                order = torch.randperm(len(y_train))
                for i in range(0, len(order), args.batch):
                    idx = order[i : i + args.batch]
                    model.train()
                    act = model(x_train[idx])
                    _step(link, up, 0, act, y_train[idx])
                    grad = down.decode(link.recv().data)  # d loss / d act, from the cloud
                    opt.zero_grad()
                    act.backward(grad)
                    opt.step()
                    loss_sum, _ = REPLY.unpack(link.recv().data)
                    losses.append(loss_sum / len(idx))
                epoch_loss = np.mean(losses[-math.ceil(len(order) / args.batch) :])
                print(f"epoch {epoch + 1}: mean train loss {epoch_loss:.3f}")
            model.eval()
            loss_sum = correct = 0
            with torch.no_grad():
                for i in range(0, len(y_test), args.batch):
                    sl = slice(i, i + args.batch)
                    _step(link, up, 1, model(x_test[sl]), y_test[sl])
                    s, c = REPLY.unpack(link.recv().data)
                    loss_sum, correct = loss_sum + s, correct + c
            stats = link.stats()
        if cloud.wait(timeout=60) != 0:
            raise SystemExit(f"the cloud process failed (rc {cloud.returncode})")
    finally:
        if cloud.poll() is None:
            cloud.kill()
            cloud.wait()

    acc = correct / len(y_test)
    q = max(1, len(losses) // 4)
    first, last = float(np.mean(losses[:q])), float(np.mean(losses[-q:]))
    print(
        f"{len(losses)} steps in {time.perf_counter() - t1:.1f} s; train loss {first:.3f} -> "
        f"{last:.3f} (first / last quarter of steps); test loss {loss_sum / len(y_test):.3f}, "
        f"accuracy {acc:.1%} on {len(y_test)} images\n"
        f"uplink ({args.up_codec}): {up.stats.encoded_frame_bytes:,} B for "
        f"{up.stats.encoded_tensor_bytes:,} B of fp32 activations "
        f"({up.stats.compression_ratio:.2f}x); {stats.messages_sent} messages sent by the edge"
    )
    if args.check:
        if not last < first:
            raise SystemExit(f"check failed: training loss did not fall, {first:.3f} -> {last:.3f}")
        if not acc >= 0.15:
            raise SystemExit(f"check failed: test accuracy {acc:.1%} is not above chance + 5 pp")
        print("check passed")
    return 0


def main() -> int:
    default_root = os.environ.get(
        "HIERBENCH_CIFAR10_ROOT",
        str(Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cifar10-jpeg"),
    )
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=default_root, help=f"default: {default_root}")
    ap.add_argument("--per-class", type=int, default=100, help="training images per class")
    ap.add_argument("--test-per-class", type=int, default=50, help="test images per class")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--up-codec", default="q8", help="activations, edge -> cloud")
    ap.add_argument("--down-codec", default="fp16", help="gradients, cloud -> edge")
    ap.add_argument("--check", action="store_true", help="fail unless it learned (CI)")
    ap.add_argument("--role", choices=("edge", "cloud"), default="edge", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)  # two processes on a small machine: one thread each
    return run_cloud(args) if args.role == "cloud" else run_edge(args)


if __name__ == "__main__":
    sys.exit(main())
