"""``hierbench info``, ``data`` and ``models``: what this machine has — the build and devices,
the datasets, the models' cut points."""

from __future__ import annotations

import argparse
import json
import time

from hierbench.spec.datasets import DATASET_SHAPES


def _cmd_info(args: argparse.Namespace) -> int:
    import torch

    from hierbench import __version__, _ext, data

    info = {
        "hierbench": __version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "extension": _ext.build_info() if _ext.available() else "not built",
        "dataset_roots": {n: str(data.default_root(n)) for n in ("cifar10", "tiny-imagenet")},
        "data_cache": str(data.default_cache_dir()),
    }
    if _ext.available():
        from hierbench import ops

        info["cpu_quant_kernel"] = ops.cpu_kernel()
        info["cpu_quant_kernels_available"] = list(ops.available_cpu_kernels())
        info["crc32_kernel"] = ops.crc32_kernel()
    print(json.dumps(info, indent=2))
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from hierbench import data

    rows = []
    for name in args.dataset:
        for split in data.SPLITS[name]:
            t0 = time.perf_counter()
            ds = data.load_dataset(name, split, root=args.root, progress=True)
            dt = time.perf_counter() - t0
            rows.append((name, split, len(ds), ds.num_classes, ds.image_shape, dt))
            print(
                f"{name:14s} {split:6s} {len(ds):6d} images  {ds.num_classes:3d} classes  "
                f"{tuple(ds.image_shape)}  loaded in {dt:.2f} s",
                flush=True,
            )
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from hierbench import models

    for name in args.model:
        for stem in args.stem:
            for dataset in args.dataset:
                classes, size = DATASET_SHAPES[dataset]
                model = models.build_model(name, classes, stem=stem, input_size=size)
                print(f"\n### {name}, stem={stem}, {dataset} ({size}x{size}, {classes} classes)\n")
                print(models.describe(model))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to ``sub`` (the `hierbench` parser's subparsers)."""
    s = sub.add_parser("info", help="build, devices and dataset roots, as JSON")
    s.set_defaults(func=_cmd_info)

    s = sub.add_parser("data", help="decode and cache datasets; report counts and load time")
    s.add_argument(
        "--dataset",
        nargs="+",
        default=["cifar10", "tiny-imagenet"],
        choices=["cifar10", "tiny-imagenet"],
    )
    s.add_argument("--root", default=None, help="dataset root (default: see `hierbench info`)")
    s.set_defaults(func=_cmd_data)

    s = sub.add_parser("models", help="cut points: activation shape and bytes per sample")
    s.add_argument("--model", nargs="+", default=["vgg16", "resnet18"])
    s.add_argument("--stem", nargs="+", default=["imagenet", "cifar"])
    s.add_argument(
        "--dataset", nargs="+", default=["cifar10", "tiny-imagenet"], choices=list(DATASET_SHAPES)
    )
    s.set_defaults(func=_cmd_models)
