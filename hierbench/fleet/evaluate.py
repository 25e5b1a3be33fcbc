"""Test accuracy of a finished fleet run, from the models it saved (``--save-state``).

A fleet trains one cloud model and E edge models (identical under ``fedavg``, one per device
otherwise). Edge i's deployed model is its edge layers followed by the cloud model, its input
passing through the run's codec exactly as in training (encode, decode); its early exit is its
own head on its edge layers. :func:`evaluate_fleet` scores every edge's final classifier and exit
on the same test images, and their means (the fleet's accuracy: each device weighs the same).
Cloud-only fleets have one model: the cloud's.

The cloud model is rank 0's replica (``cloud-0.pt``): DDP keeps the replicas' parameters equal
and broadcasts rank 0's buffers (BatchNorm running statistics) before every forward.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hierbench import data as hdata
from hierbench.codec import ActivationCodec
from hierbench.errors import ConfigError
from hierbench.fleet.config import FleetConfig
from hierbench.methods.parts import NORMALIZATION, as_input, as_wire, autocast, build_parts

__all__ = ["evaluate_fleet"]

#: Test images per forward pass.
EVAL_BATCH = 256


def _load(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path} is missing: evaluate a fleet run made with --save-state")
    return torch.load(path, map_location="cpu", weights_only=True)


@torch.no_grad()
def evaluate_fleet(fcfg: FleetConfig, run_dir: str | Path, *, samples: int | None = None) -> dict:
    """Accuracy of every edge's final classifier and exit on the test split (``samples``: a
    seeded subset of that many; None: all of it): ``{"per_edge": [{edge, final_acc, exit_acc}],
    "final_acc", "exit_acc", "eval_samples", "eval_split"}``."""
    cfg = fcfg.run
    run_dir = Path(run_dir)
    test = hdata.load_dataset(cfg.dataset, "test", cfg.data_root)
    if samples:
        test = test.subset(samples, seed=cfg.seed)
    mean, std = NORMALIZATION[cfg.dataset]
    _model, edge, cloud, head = build_parts(cfg)
    cloud.load_state_dict(_load(run_dir / "cloud-0.pt"))
    cloud.eval()
    codec = ActivationCodec(cfg.codec) if edge is not None else None
    edges = range(fcfg.edges) if edge is not None else [None]
    per_edge = []
    for i in edges:
        if i is not None:
            st = _load(run_dir / f"edge-{i}.pt")
            edge.load_state_dict(st["edge"])
            edge.eval()
            if head is not None:  # split learning has no exit
                head.load_state_dict(st["head"])
                head.eval()
        correct = correct_exit = 0
        for s in range(0, len(test), EVAL_BATCH):
            x, y = test.images[s : s + EVAL_BATCH], test.labels[s : s + EVAL_BATCH]
            x = as_input(hdata.normalize(x, mean, std), cfg)
            with autocast(cfg):
                if i is None:
                    out = cloud(x)
                else:
                    act = edge(x)
                    if head is not None:
                        correct_exit += int((head(act).argmax(1) == y).sum())
                    act = codec.decode(codec.encode(as_wire(act), seed=s))
                    out = cloud(as_input(act, cfg))
            correct += int((out.argmax(1) == y).sum())
        per_edge.append(
            {
                "edge": i,
                "final_acc": correct / len(test),
                "exit_acc": None if i is None or head is None else correct_exit / len(test),
            }
        )
    exits = [p["exit_acc"] for p in per_edge if p["exit_acc"] is not None]
    return {
        "per_edge": per_edge,
        "final_acc": sum(p["final_acc"] for p in per_edge) / len(per_edge),
        "exit_acc": sum(exits) / len(exits) if exits else None,
        "eval_samples": len(test),
        "eval_split": "test",
        "model": "cloud-0.pt (rank 0's replica) after edge-<i>.pt's edge layers, through the "
        "run's codec",
    }
