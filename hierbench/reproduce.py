"""``hierbench reproduce``: the main job, regenerating ``results/<preset>/``.

Stages that exist today (each writes JSON and a Markdown table into the output folder):

1. ``data``   decode + cache CIFAR-10 and Tiny ImageNet; counts, classes, load times.
2. ``cuts``   for the paper's four configurations, the activation bytes per sample at every cut
              at fp32 / 8 / 4 / 2 bits against the raw uint8 image, and the link-bound limit of
              the upload reduction, 1 - D(s)/D0 (``../shared/PAPER.md``: at a 3G rate the link
              dominates and the runtime reduction approaches this). Computed, not trained.
3. ``loader`` images/s of the loader (augment + normalise) beside a ResNet-18 training step's
              images/s on this CPU: the data path must stay under 10 % of training time.

Measured training runs, the runtime model and the report come with the training-methods,
runtime-model and reproduce issues; until then this is the most complete run that exists.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import time
from pathlib import Path

from hierbench.errors import ConfigError

PRESETS = {
    # loader_batches: batches timed for the loader; train_steps: ResNet-18 steps timed
    "smoke": {"datasets": ("cifar10",), "loader_batches": 20, "train_steps": 2},
    "quick": {"datasets": ("cifar10", "tiny-imagenet"), "loader_batches": 391, "train_steps": 5},
}

# The paper's four headline configurations (PAPER.md), torchvision-style networks.
PAPER_CONFIGS = (
    ("vgg16", "cifar10", "pool4", 29),
    ("resnet18", "cifar10", "layer3", 61),
    ("vgg16", "tiny-imagenet", "pool4", 25),
    ("resnet18", "tiny-imagenet", "layer4", 81),
)
DATASET_SHAPE = {"cifar10": (10, 32), "tiny-imagenet": (200, 64)}
BITS = (32, 8, 4, 2)


def _environment() -> dict:
    import torch

    from hierbench import __version__, _ext

    return {
        "hierbench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "extension": _ext.build_info() if _ext.available() else None,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def stage_data(datasets) -> dict:
    from hierbench import data

    rows = []
    for name in datasets:
        for split in data.SPLITS[name]:
            t0 = time.perf_counter()
            ds = data.load_dataset(name, split, progress=True)
            rows.append(
                {
                    "dataset": name,
                    "split": split,
                    "images": len(ds),
                    "classes": ds.num_classes,
                    "shape": list(ds.image_shape),
                    "load_s": round(time.perf_counter() - t0, 3),
                }
            )
            print(f"  {name}/{split}: {len(ds)} images in {rows[-1]['load_s']} s", flush=True)
    return {"rows": rows}


def stage_cuts() -> dict:
    from hierbench import models

    rows = []
    for name, dataset, paper_cut, paper_pct in PAPER_CONFIGS:
        classes, size = DATASET_SHAPE[dataset]
        model = models.build_model(name, classes, stem="imagenet", input_size=size)
        raw = model.input_bytes()
        for cut in model.cuts:
            row = {
                "model": name,
                "dataset": dataset,
                "cut": cut,
                "shape": "x".join(map(str, model.cut_shape(cut))),
                "raw_bytes": raw,
                "paper_cut": cut == paper_cut,
                "paper_reduction_pct": paper_pct if cut == paper_cut else None,
            }
            for b in BITS:
                nbytes = model.cut_bytes(cut, bits=b)
                row[f"bytes_{b}bit"] = nbytes
                row[f"link_bound_reduction_{b}bit_pct"] = round(100 * (1 - nbytes / raw), 1)
            rows.append(row)
    return {"rows": rows, "stem": "imagenet", "labels": "excluded (same for both methods)"}


def stage_loader(loader_batches: int, train_steps: int) -> dict:
    import torch

    from hierbench import data, models

    ds = data.load_dataset("cifar10", "train")
    loader = data.BatchLoader(ds, 128, shuffle=True, augment=True, seed=0, drop_last=True)
    t0 = time.perf_counter()
    n = 0
    for i, (x, _) in enumerate(loader):
        data.normalize(x, ds.mean, ds.std)
        n += x.shape[0]
        if i + 1 >= loader_batches:
            break
    loader_ips = n / (time.perf_counter() - t0)

    model = models.build_model("resnet18", 10, stem="imagenet", input_size=32)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x, y = next(iter(loader))
    xf = data.normalize(x, ds.mean, ds.std)
    times = []
    for _ in range(train_steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(xf), y).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times[1:])  # first step is warm-up
    train_ips = 128 / step_s
    return {
        "loader_images_per_s": round(loader_ips, 1),
        "resnet18_train_images_per_s": round(train_ips, 1),
        "loader_share_of_training_pct": round(100 * train_ips / loader_ips, 3),
        "batch": 128,
        "threads": torch.get_num_threads(),
    }


def _markdown(results: dict) -> str:
    lines = [f"# hierbench reproduce — preset `{results['preset']}`", ""]
    env = results["environment"]
    lines += [
        f"Made by `hierbench reproduce --preset {results['preset']}` on {env['time_utc']} "
        f"(torch {env['torch']}, {env['threads']} threads).",
        "",
    ]
    if "data" in results:
        lines += [
            "## Datasets",
            "",
            "| dataset | split | images | classes | load s |",
            "|---|---|---|---|---|",
        ]
        for r in results["data"]["rows"]:
            cells = (r["dataset"], r["split"], r["images"], r["classes"], r["load_s"])
            lines.append("| " + " | ".join(map(str, cells)) + " |")
        lines.append("")
    lines += [
        "## Bytes per sample at each cut (imagenet stem; labels excluded)",
        "",
        "Link-bound limit of the runtime reduction of hierarchical against cloud-only training "
        "when the upload dominates: 1 − D(s)/D0, D0 = raw uint8 image. **Computed from shapes, "
        "not measured**; the paper's measured reduction is beside its chosen cut.",
        "",
        "| model | dataset | cut | C×H×W | raw B | fp32 B | 8-bit B "
        "| limit @8 bit | limit @4 bit | paper |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["cuts"]["rows"]:
        paper = f"{r['paper_reduction_pct']} %" if r["paper_cut"] else ""
        lines.append(
            f"| {r['model']} | {r['dataset']} | {r['cut']} | {r['shape']} | {r['raw_bytes']} | "
            f"{r['bytes_32bit']} | {r['bytes_8bit']} | {r['link_bound_reduction_8bit_pct']} % | "
            f"{r['link_bound_reduction_4bit_pct']} % | {paper} |"
        )
    lo = results["loader"]
    lines += [
        "",
        "## Data path against training (CIFAR-10, batch 128)",
        "",
        f"Loader (augment + normalise): {lo['loader_images_per_s']} images/s; ResNet-18 training "
        f"step: {lo['resnet18_train_images_per_s']} images/s; the data path costs "
        f"{lo['loader_share_of_training_pct']} % of training time.",
        "",
    ]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    if args.preset not in PRESETS:
        raise ConfigError(f"unknown preset {args.preset!r}; valid choices: {', '.join(PRESETS)}")
    cfg = PRESETS[args.preset]
    out = args.out or Path("results") / args.preset
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise ConfigError(f"{out} exists and is not empty; pass --overwrite to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"preset": args.preset, "environment": _environment()}
    t0 = time.perf_counter()
    print("[1/3] data", flush=True)
    results["data"] = stage_data(cfg["datasets"])
    print("[2/3] cuts", flush=True)
    results["cuts"] = stage_cuts()
    print("[3/3] loader vs training step", flush=True)
    results["loader"] = stage_loader(cfg["loader_batches"], cfg["train_steps"])
    results["elapsed_s"] = round(time.perf_counter() - t0, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "README.md").write_text(_markdown(results))
    print(f"wrote {out}/results.json and {out}/README.md in {results['elapsed_s']} s")
    return 0
