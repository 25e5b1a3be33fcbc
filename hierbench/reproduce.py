"""``hierbench reproduce``: the main job, regenerating ``results/<preset>/``.

1. the preset's grid of runs (:mod:`hierbench.experiments`): timing runs (two processes) and
   accuracy runs, one run record each under ``runs/``; resumable (``--resume``), never
   overwritten without ``--overwrite``.
2. ``foundation`` (preset ``quick``): decode + cache CIFAR-10 and Tiny ImageNet (counts, classes,
   load times), and the loader's images/s (augment + normalise) beside a ResNet-18 training
   step's: the data path must stay under 10 % of training time. -> ``foundation.json``
3. the report (:mod:`hierbench.report`): tables, plots and ``README.md`` from the run records
   and the committed profiles.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

# The foundation checks' settings (the experiment presets are in hierbench.experiments).
# loader_batches: batches timed for the loader; train_steps: ResNet-18 steps timed.
FOUNDATION = {"datasets": ("cifar10", "tiny-imagenet"), "loader_batches": 391, "train_steps": 5}


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


def main(args: argparse.Namespace) -> int:
    """``hierbench reproduce``: run a preset's grid (resumable), then write its report."""
    import shlex
    import sys

    from hierbench import experiments, report

    preset = experiments.get_preset(args.preset)
    if args.list:
        print(experiments.describe(preset))
        return 0
    out = args.out or Path("results") / preset.name
    command = "hierbench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    t0 = time.perf_counter()
    print(f"hierbench reproduce --preset {preset.name}: {preset.description}", flush=True)
    print(f"budget: {preset.budget}; output: {out}", flush=True)
    experiments.run_preset(
        preset,
        out,
        overwrite=args.overwrite,
        resume=args.resume,
        progress=not args.quiet,
        command=command,
        accept_other_commits=getattr(args, "accept_other_commits", False),
    )
    if preset.foundation and not (out / "foundation.json").is_file():
        from hierbench.methods.runner import environment

        cfg = FOUNDATION
        found: dict = {"environment": environment()}
        print("[foundation] data: decode + cache the datasets", flush=True)
        found["data"] = stage_data(cfg["datasets"])
        print("[foundation] the loader against a ResNet-18 training step", flush=True)
        found["loader"] = stage_loader(cfg["loader_batches"], cfg["train_steps"])
        (out / "foundation.json").write_text(json.dumps(found, indent=2) + "\n")
    report.write_report(out, args.profiles)
    print(f"hierbench reproduce: {out} in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0
