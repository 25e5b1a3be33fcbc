"""The presets (:data:`PRESETS`): ``smoke``, ``quick``, ``accuracy`` and ``paper``, each a grid of
timing and accuracy runs with its budget and the report's settings."""

from __future__ import annotations

from hierbench.errors import ConfigError
from hierbench.experiments.grid import Experiment, Preset
from hierbench.runtime.table import PAPER_SETTINGS

_BASE = {"model": "resnet18", "stem": "imagenet", "dataset": "cifar10", "cut": "layer3"}


def _timing(method: str, link: str, batches: int, codec: str = "q8", **extra) -> Experiment:
    cfg = {
        **_BASE,
        "method": method,
        "codec": codec if method != "cloud_only" else "fp32",
        "grad_codec": "q8",
        "link": link,
        "epochs": 1,
        "batches_per_epoch": batches,
        "eval": "end",
        "eval_samples": 500,
        "threads_edge": 1,
        "threads_cloud": 1,
        **extra,
    }
    return Experiment("timing", cfg)


def _accuracy(method: str, epochs: int, codec: str = "q8", **extra) -> Experiment:
    cfg = {
        **_BASE,
        "method": method,
        "codec": codec if method != "cloud_only" else "fp32",
        "grad_codec": "q8",
        "link": None,
        "epochs": epochs,
        "eval": "epoch",
        "threads_edge": 1,
        "threads_cloud": 1,
        **extra,
    }
    return Experiment("accuracy", cfg)


def _validation_grid(batches: dict[str, int], **extra) -> list[Experiment]:
    out = []
    for link, n in batches.items():
        for method in ("cloud_only", "split", "hierarchical"):
            out.append(_timing(method, link, n, **extra))
    return out


_SMOKE_DATA = {"limit_per_class": 8, "eval_samples": 64, "batch_size": 16}


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        name="smoke",
        description=(
            "the whole pipeline on a tiny real CIFAR-10 subset (80 training images): three "
            "two-process timing runs over a 20 Mbit/s link, two 2-epoch accuracy runs, the "
            "report; checks that everything runs, measures nothing worth quoting"
        ),
        budget="under 2 minutes on the 2-core reference machine",
        experiments=tuple(
            [
                _timing(m, "20mbit/5ms", 3, **_SMOKE_DATA)
                for m in ("cloud_only", "split", "hierarchical")
            ]
            + [
                _accuracy("cloud_only", 2, **_SMOKE_DATA),
                _accuracy("hierarchical", 2, **_SMOKE_DATA),
            ]
        ),
        report={**PAPER_SETTINGS, "links": ["3g"], "sweep_points": 9},
    ),
    "quick": Preset(
        name="quick",
        description=(
            "every runtime-model table from the committed profiles (the paper's four "
            "configurations at 3g, 4g, wifi); measured two-process validation of ResNet-18 cut "
            "at layer3 for the three methods at 3g, 4g and wifi (plus 4-bit hierarchical at 3g); "
            "a 2-epoch accuracy comparison on 10,000 real CIFAR-10 training images"
        ),
        budget="about 10 minutes on the 2-core reference machine (9 min 15 s measured)",
        experiments=tuple(
            [
                *_validation_grid({"3g": 24, "4g": 40, "wifi": 40}),
                _timing("hierarchical", "3g", 24, codec="q4"),
                *(
                    _accuracy(m, 2, codec=c, cut=cut, limit_per_class=1000, eval_samples=2000)
                    for m, c, cut in (
                        ("cloud_only", "fp32", "layer3"),
                        ("split", "q8", "layer3"),
                        ("hierarchical", "q8", "layer3"),
                        ("hierarchical", "q4", "layer3"),
                        ("hierarchical", "q8", "layer2"),
                    )
                ),
            ]
        ),
        report=PAPER_SETTINGS,
        foundation=True,
    ),
    "accuracy": Preset(
        name="accuracy",
        description=(
            "CIFAR-10 accuracy, standard (cloud-only) against hierarchical training at the "
            "paper's cut (ResNet-18 layer3) with 8-bit and 4-bit activations: 5 epochs of the "
            "full 50,000-image training set, the full test set after every epoch"
        ),
        budget="about 35 minutes on the 2-core reference machine (34 min measured)",
        experiments=(
            _accuracy("cloud_only", 5, codec="fp32", grad_codec="fp32", eval_samples=None),
            _accuracy("hierarchical", 5, codec="q8", grad_codec="fp32", eval_samples=None),
            _accuracy("hierarchical", 5, codec="q4", grad_codec="fp32", eval_samples=None),
        ),
        report=PAPER_SETTINGS,
    ),
    "paper": Preset(
        name="paper",
        description=(
            "full training schedules: the paper's four configurations (VGG-16 and ResNet-18 on "
            "CIFAR-10 and Tiny ImageNet, imagenet stem) x standard / split / hierarchical (8-bit) "
            "/ hierarchical (4-bit), 30 epochs each, plus 200-batch two-process timing runs of "
            "each configuration at 3g, 4g and wifi"
        ),
        budget="days on the 2-core reference machine; a GPU cloud recommended",
        experiments=tuple(
            [
                _accuracy(
                    m,
                    30,
                    codec=codec,
                    model=model,
                    dataset=dataset,
                    cut=cut,
                    eval_samples=None,
                    threads_cloud=2,
                )
                for model, _stem, dataset, cut, _pct in PAPER_SETTINGS["configs"]
                for m, codec in (
                    ("cloud_only", "fp32"),
                    ("split", "q8"),
                    ("hierarchical", "q8"),
                    ("hierarchical", "q4"),
                )
            ]
            + [
                _timing(m, link, 200, model=model, dataset=dataset, cut=cut)
                for model, _stem, dataset, cut, _pct in PAPER_SETTINGS["configs"]
                for link in ("3g", "4g", "wifi")
                for m in ("cloud_only", "split", "hierarchical")
            ]
        ),
        report=PAPER_SETTINGS,
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid choices: {', '.join(PRESETS)}")
    return PRESETS[name]


def describe(preset: Preset) -> str:
    """A listing of a preset's runs (``hierbench reproduce --list``)."""
    lines = [f"{preset.name}: {preset.description}", f"budget: {preset.budget}"]
    for e in preset.experiments:
        lines.append(f"  {e.kind:8s} {e.id}")
    return "\n".join(lines)
