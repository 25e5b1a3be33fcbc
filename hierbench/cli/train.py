"""The ``hierbench`` command.

Subcommands import what they need when they run, so ``hierbench --help`` is instant and a
subcommand that needs no native code (``models``) works without the extension.

    hierbench info                     build, devices, dataset roots
    hierbench data [--dataset ...]     decode and cache datasets; report counts and load speed
    hierbench models [--model ...]     cut points: activation shape and bytes per sample
    hierbench reproduce [--preset ...] the main job: a preset's runs + report -> results/<preset>/
    hierbench report FOLDER...         tables and plots of a results folder (no torch needed)
    hierbench profile --model ...      measure a device profile (per-block costs) -> CSV
    hierbench predict --model ...      runtime-model table: methods x cuts x codecs for a link
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hierbench.errors import HierbenchError

DATASET_INPUT = {"cifar10": (10, 32), "tiny-imagenet": (200, 64)}


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
                classes, size = DATASET_INPUT[dataset]
                model = models.build_model(name, classes, stem=stem, input_size=size)
                print(f"\n### {name}, stem={stem}, {dataset} ({size}x{size}, {classes} classes)\n")
                print(models.describe(model))
    return 0


def _run_config(args: argparse.Namespace):
    from hierbench.methods import RunConfig

    outages = tuple(tuple(float(v) for v in o.split(":")) for o in args.outage or ())
    return RunConfig(
        method=args.method,
        model=args.model,
        stem=args.stem,
        dataset=args.dataset,
        data_root=args.data_root,
        limit_per_class=args.limit_per_class,
        cut=args.cut,
        exit_head=args.exit_head,
        codec=args.codec,
        grad_codec=args.grad_codec,
        link=None if args.link in ("none", "unshaped") else args.link,
        batch_size=args.batch_size,
        epochs=args.epochs,
        batches_per_epoch=args.batches_per_epoch,
        lr=args.lr,
        seed=args.seed,
        augment=not args.no_augment,
        edge_slowdown=args.edge_slowdown,
        threads_edge=args.threads,
        threads_cloud=args.threads,
        eval=args.eval,
        eval_samples=args.eval_samples or None,
        outages=outages,
        slots=args.slots,
        checkpoint_every=args.checkpoint_every,
    )


def _validate_names(cfg) -> None:
    """Unknown cut / codec / link: errors that list the valid choices, before anything runs."""
    from hierbench import models
    from hierbench.codec import CodecConfig
    from hierbench.transfer import Link

    model = models.build_model(cfg.model, cfg.num_classes, stem=cfg.stem, input_size=cfg.input_size)
    if cfg.method != "cloud_only":
        model.check_cut(cfg.cut)
    CodecConfig.parse(cfg.codec)
    CodecConfig.parse(cfg.grad_codec)
    if cfg.link is not None:
        Link.parse(cfg.link)


def _finish_record(record: dict, out: Path | None) -> None:
    from hierbench.methods import write_record

    t = record["totals"]
    print(
        f"{record['config']['method']}: {t['batches']} batches, wall {t['wall_s']:.1f} s "
        f"(training {t['train_wall_s']:.1f} s), up {t['bytes_up'] / 1e6:.2f} MB, "
        f"down {t['bytes_down'] / 1e6:.2f} MB"
    )
    for e in record["epochs"]:
        print(
            "  epoch",
            json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in e.items()}),
        )
    if out is not None:
        print(f"run record: {write_record(record, out)}")


def _cmd_train(args: argparse.Namespace) -> int:
    from hierbench.methods import runner

    cfg = _run_config(args)
    _validate_names(cfg)
    ckpt = dict(checkpoint_dir=args.checkpoint_dir, resume=args.resume)
    if args.processes == 1:
        record = runner.run(cfg, progress=not args.quiet, **ckpt)
    else:
        record = runner.run_two_processes(
            cfg, cpus=(args.cpu_edge, args.cpu_cloud), progress=not args.quiet, **ckpt
        )
    _finish_record(record, args.out)
    return 0


def _cmd_edge(args: argparse.Namespace) -> int:
    from hierbench.methods import runner

    cfg = _run_config(args)
    _validate_names(cfg)
    host, port = _host_port(args.connect)
    record = runner.run_edge(
        cfg,
        host,
        port,
        _secret(args),
        cpu=args.cpu,
        progress=not args.quiet,
        checkpoint_dir=args.checkpoint_dir,
        resume=args.resume,
    )
    _finish_record(record, args.out)
    return 0


def _cmd_cloud(args: argparse.Namespace) -> int:
    from hierbench.methods import runner

    host, port = _host_port(args.listen)
    outages = tuple(tuple(float(v) for v in o.split(":")) for o in args.outage or ())
    link = None if args.link in ("none", "unshaped") else args.link
    runner.run_cloud(
        host,
        port,
        _secret(args),
        link=link,
        outages=outages,
        cpu=args.cpu,
        threads=args.threads,
        progress=runner.Progress(not args.quiet or args.progress_lines, lines=args.progress_lines),
        checkpoint_dir=args.checkpoint_dir,
        resume=args.resume,
    )
    return 0


def _host_port(spec: str) -> tuple[str, int]:
    host, _, port = spec.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {spec!r}")
    return host or "127.0.0.1", int(port)


def _secret(args: argparse.Namespace) -> bytes:
    import os

    if args.secret_file:
        return Path(args.secret_file).read_bytes().strip()
    env = os.environ.get("HIERBENCH_SECRET")
    if not env:
        raise ValueError("a shared secret is required: --secret-file FILE or HIERBENCH_SECRET")
    return env.encode()


def _add_run_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--method", default="hierarchical", help="cloud_only | split | hierarchical")
    s.add_argument("--model", default="resnet18", help="vgg16 | resnet18")
    s.add_argument("--stem", default="imagenet", help="imagenet | cifar")
    s.add_argument("--dataset", default="cifar10", help="cifar10 | tiny-imagenet | synthetic")
    s.add_argument("--data-root", default=None)
    s.add_argument("--limit-per-class", type=int, default=None)
    s.add_argument("--cut", default="layer3")
    s.add_argument("--exit-head", default="conv", help="conv | minimal")
    s.add_argument("--codec", default="q8", help="fp32 | fp16 | bf16 | q8 | q4 | q2 [+zstd<level>]")
    s.add_argument("--grad-codec", default="fp32")
    s.add_argument("--link", default="3g", help="3g | 4g | wifi | lan | <rate>[/<latency>] | none")
    s.add_argument("--batch-size", type=int, default=128)
    s.add_argument("--epochs", type=int, default=1)
    s.add_argument("--batches-per-epoch", type=int, default=None)
    s.add_argument("--lr", type=float, default=0.05)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-augment", action="store_true")
    s.add_argument(
        "--edge-slowdown",
        type=float,
        default=1.0,
        help="the edge idles so its compute takes k x as long (k >= 1)",
    )
    s.add_argument("--threads", type=int, default=1, help="torch threads per role")
    s.add_argument("--eval", default="epoch", help="epoch | end | none")
    s.add_argument("--eval-samples", type=int, default=1000, help="0: the whole test split")
    s.add_argument(
        "--outage",
        action="append",
        metavar="START:END",
        help="link down from START to END seconds after the start (repeatable)",
    )
    s.add_argument("--slots", type=int, default=2, help="transfer ring slots")
    s.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        help="checkpoint every N steps (see --checkpoint-dir); the edge replays to a restarted "
        "cloud, a restarted edge resumes against the cloud",
    )
    s.add_argument(
        "--checkpoint-dir",
        default=None,
        help="with --checkpoint-every: where the edge (edge.pt) and, with --processes 2, the "
        "cloud (cloud.pt) keep their checkpoints",
    )
    s.add_argument(
        "--resume", action="store_true", help="start from the checkpoint(s) in --checkpoint-dir"
    )
    s.add_argument("--out", type=Path, default=None, help="write the run record (JSON) here")
    s.add_argument("--quiet", action="store_true", help="no progress bar")


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from hierbench import reproduce

    return reproduce.main(args)


def _cmd_report(args: argparse.Namespace) -> int:
    from hierbench import report

    if not args.readme_only:
        for folder in args.folder:
            report.write_report(folder, args.profiles, plots=not args.no_plots)
    if args.readme is not None:
        changed = report.update_readme(args.readme, report.headline_markdown(args.folder))
        print(f"{args.readme}: results block {'updated' if changed else 'unchanged'}")
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from hierbench import profiling

    if args.device != "cpu" and args.threads is None:
        threads = None
    else:
        threads = args.threads if args.threads is not None else 1
    if args.out is None or args.out.suffix != ".csv":
        out = profiling.default_path(
            args.out or Path("results/profiles"),
            args.model,
            args.stem,
            args.dataset,
            args.device,
            threads,
        )
    else:
        out = args.out
    log = None if args.quiet else (lambda msg: print(msg, flush=True))
    print(
        f"profiling {args.model} stem={args.stem} {args.dataset} batch {args.batch} on "
        f"{args.device}"
        + (f" with {threads} thread(s)" if args.device == "cpu" else "")
        + f", warm-up {args.warmup} + median of {args.repeats}",
        flush=True,
    )
    prof = profiling.measure_profile(
        args.model,
        stem=args.stem,
        dataset=args.dataset,
        batch=args.batch,
        device=args.device,
        threads=threads,
        warmup=args.warmup,
        repeats=args.repeats,
        command="hierbench " + " ".join(sys.argv[1:]),
        log=log,
    )
    profiling.write_profile(prof, out)
    print(f"wrote {out} ({prof.meta['profile_wall_s']} s)")
    return 0


def _read_accuracy(path: Path) -> tuple[dict[tuple[str, str], float], float | None]:
    """CSV with columns cut, codec, accuracy; a row with cut ``cloud-only`` is the baseline."""
    import csv

    table: dict[tuple[str, str], float] = {}
    baseline = None
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["cut"] == "cloud-only":
                baseline = float(row["accuracy"])
            else:
                table[(row["cut"], row["codec"])] = float(row["accuracy"])
    return table, baseline


def _cmd_predict(args: argparse.Namespace) -> int:
    import math

    from hierbench.runtime import table as rp
    from hierbench.runtime.model import Conventions
    from hierbench.runtime.profiles import load_profile
    from hierbench.runtime.wire import parse_codec

    if args.edge_profile:
        edge = load_profile(args.edge_profile)
        cloud = None
    else:
        edge, cloud = rp.load_for(
            args.profile_dir, args.model, args.stem, args.dataset, args.edge_threads
        )
        if edge.model != args.model or edge.dataset != args.dataset:
            raise HierbenchError(f"profile {edge.path} is not {args.model}/{args.dataset}")
    if args.cloud_profile:
        cloud = load_profile(args.cloud_profile)
    if args.no_cloud_profile:
        cloud = None
    enc = math.inf if args.encode_gbps is None else args.encode_gbps * 1e9
    dec = math.inf if args.decode_gbps is None else args.decode_gbps * 1e9
    codecs = []
    for spec in args.codec:
        c = parse_codec(spec)
        codecs.append(
            type(c)(
                c.wire,
                zstd=c.zstd,
                zstd_ratio=args.zstd_ratio if c.zstd else None,
                encode_Bps=enc,
                decode_Bps=dec,
            )
        )
    constraints: dict = {}
    if args.memory_budget_mib is not None:
        constraints["memory_budget_bytes"] = int(args.memory_budget_mib * 2**20)
    if args.accuracy is not None:
        table, baseline = _read_accuracy(args.accuracy)
        if args.baseline_accuracy is not None:
            baseline = args.baseline_accuracy
        if baseline is None:
            raise HierbenchError(
                "the accuracy table needs a 'cloud-only' row or --baseline-accuracy"
            )
        constraints.update(accuracy=table, baseline_accuracy=baseline, tolerance=args.tolerance)
    paper = {(m, d): (cut, red) for m, d, cut, red in rp.PAPER_CONFIGS}
    paper_cut, paper_red = paper.get((args.model, args.dataset), (None, None))
    if args.stem != "imagenet" and args.model == "resnet18":
        paper_cut = paper_red = None  # the paper's numbers are for the torchvision-style stem
    text, rows, _ = rp.predict_report(
        edge,
        args.link,
        cloud=cloud,
        cuts=args.cut,
        codecs=codecs,
        with_crossover=not args.no_crossover,
        title=f"{args.model}{'' if args.model == 'vgg16' else f' (stem {args.stem})'} on "
        f"{args.dataset}, link {args.link}",
        paper_cut=paper_cut,
        paper_reduction=paper_red,
        constraints=constraints,
        n_batches=args.batches,
        epochs=args.epochs,
        cloud_speedup=args.cloud_speedup,
        edge_slowdown=args.edge_slowdown,
        head=args.head,
        conventions=Conventions(upload=args.upload, labels=args.labels, latency=args.latency),
    )
    print(text)
    if args.csv:
        rp.write_csv(rows, args.csv)
        print(f"wrote {args.csv}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hierbench", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
        "--dataset", nargs="+", default=["cifar10", "tiny-imagenet"], choices=list(DATASET_INPUT)
    )
    s.set_defaults(func=_cmd_models)

    s = sub.add_parser("train", help="train with one method; write a run record")
    _add_run_args(s)
    s.add_argument(
        "--processes",
        type=int,
        default=1,
        choices=(1, 2),
        help="1: both roles in this process; 2: edge and cloud processes over TCP",
    )
    s.add_argument("--cpu-edge", type=int, default=None, help="pin the edge process to this CPU")
    s.add_argument("--cpu-cloud", type=int, default=None, help="pin the cloud process to this CPU")
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser("edge", help="the edge role: connect to a cloud and drive a run")
    _add_run_args(s)
    s.add_argument("--connect", required=True, metavar="HOST:PORT")
    s.add_argument("--secret-file", default=None)
    s.add_argument("--cpu", type=int, default=None, help="pin this process to a CPU")
    s.set_defaults(func=_cmd_edge)

    s = sub.add_parser("cloud", help="the cloud role: listen, train what arrives")
    s.add_argument("--listen", default="127.0.0.1:7700", metavar="HOST:PORT")
    s.add_argument("--secret-file", default=None)
    s.add_argument("--cpu", type=int, default=None)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument(
        "--link",
        default="3g",
        help="the downlink shaping; must equal the edge's --link (none: unshaped)",
    )
    s.add_argument("--outage", action="append", metavar="START:END")
    s.add_argument("--checkpoint-dir", default=None, help="where the cloud keeps its checkpoint")
    s.add_argument(
        "--resume", action="store_true", help="start from the checkpoint in --checkpoint-dir"
    )
    s.add_argument("--quiet", action="store_true")
    s.add_argument(
        "--progress-lines",
        action="store_true",
        help="progress as lines on stdout, for a parent process (hierbench train --processes 2)",
    )
    s.set_defaults(func=_cmd_cloud)

    s = sub.add_parser(
        "reproduce",
        help="the main job: run a preset's grid, write results/<preset>/ (tables, plots)",
    )
    s.add_argument("--preset", default="quick", help="smoke | quick (default) | accuracy | paper")
    s.add_argument(
        "--out", type=Path, default=None, help="output folder (default results/<preset>)"
    )
    s.add_argument(
        "--overwrite", action="store_true", help="delete an existing output folder first"
    )
    s.add_argument("--resume", action="store_true", help="keep an existing folder's finished runs")
    s.add_argument("--list", action="store_true", help="list the preset's runs and exit")
    s.add_argument("--profiles", type=Path, default=Path("results/profiles"))
    s.add_argument("--quiet", action="store_true", help="no per-run progress bars")
    s.set_defaults(func=_cmd_reproduce)

    s = sub.add_parser(
        "report", help="tables and plots of a results folder (run records + profiles, no torch)"
    )
    s.add_argument("folder", type=Path, nargs="+", help="results folder(s), e.g. results/quick")
    s.add_argument("--profiles", type=Path, default=Path("results/profiles"))
    s.add_argument("--no-plots", action="store_true")
    s.add_argument(
        "--readme",
        type=Path,
        default=None,
        help="also regenerate this README's results block from the folders (first: runtime)",
    )
    s.add_argument(
        "--readme-only",
        action="store_true",
        help="with --readme: only regenerate the README block from the folders' tables",
    )
    s.set_defaults(func=_cmd_report)

    s = sub.add_parser("profile", help="measure a device profile (per-block costs) as CSV")
    s.add_argument("--model", required=True, choices=["vgg16", "resnet18"])
    s.add_argument("--stem", default="imagenet", choices=["imagenet", "cifar"])
    s.add_argument("--dataset", default="cifar10", choices=list(DATASET_INPUT))
    s.add_argument("--threads", type=int, default=None, help="CPU threads (default 1 on CPU)")
    s.add_argument("--batch", type=int, default=128)
    s.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    s.add_argument("--warmup", type=int, default=1, help="untimed runs per region (>= 1)")
    s.add_argument("--repeats", type=int, default=3, help="timed runs per region (median)")
    s.add_argument(
        "--out",
        type=Path,
        default=None,
        help="a .csv file, or a folder for the standard name (default results/profiles)",
    )
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_profile)

    s = sub.add_parser(
        "predict", help="runtime-model table (cloud-only / split / hierarchical) for a link"
    )
    s.add_argument("--model", required=True, choices=["vgg16", "resnet18"])
    s.add_argument("--dataset", required=True, choices=list(DATASET_INPUT))
    s.add_argument("--stem", default="imagenet", choices=["imagenet", "cifar"])
    s.add_argument("--link", default="3g", help="3g|4g|wifi|lan or e.g. 20mbit, 1mbit:4mbit/75ms")
    s.add_argument("--cut", nargs="+", default=None, help="cuts to consider (default: all)")
    s.add_argument("--codec", nargs="+", default=["fp32", "q8", "q4", "q2"])
    s.add_argument("--profile-dir", type=Path, default=Path("results/profiles"))
    s.add_argument("--edge-profile", type=Path, default=None, help="explicit edge profile CSV")
    s.add_argument("--cloud-profile", type=Path, default=None, help="explicit cloud profile CSV")
    s.add_argument(
        "--no-cloud-profile", action="store_true", help="ignore a CUDA profile in --profile-dir"
    )
    s.add_argument("--edge-threads", type=int, default=1, help="which CPU profile is the edge")
    s.add_argument(
        "--cloud-speedup",
        type=float,
        default=None,
        help="cloud = profile time / F (default 10 without a cloud profile: an assumption)",
    )
    s.add_argument("--edge-slowdown", type=float, default=1.0, help="edge compute x k")
    s.add_argument("--head", default="conv", choices=["conv", "minimal"])
    s.add_argument("--epochs", type=int, default=1)
    s.add_argument("--batches", type=int, default=None, help="batches per epoch (default: data)")
    s.add_argument("--upload", default="every-epoch", choices=["every-epoch", "once"])
    s.add_argument("--labels", default="byte", choices=["byte", "log2"])
    s.add_argument("--latency", default="per-message", choices=["per-message", "pipelined"])
    s.add_argument("--encode-gbps", type=float, default=None, help="codec encode GB/s (free)")
    s.add_argument("--decode-gbps", type=float, default=None, help="codec decode GB/s (free)")
    s.add_argument("--zstd-ratio", type=float, default=None, help="override for +zstd codecs")
    s.add_argument("--memory-budget-mib", type=float, default=None)
    s.add_argument("--accuracy", type=Path, default=None, help="CSV: cut,codec,accuracy")
    s.add_argument("--baseline-accuracy", type=float, default=None)
    s.add_argument("--tolerance", type=float, default=0.01)
    s.add_argument("--no-crossover", action="store_true")
    s.add_argument("--csv", type=Path, default=None, help="also write the table as CSV")
    s.set_defaults(func=_cmd_predict)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (HierbenchError, ValueError) as exc:
        print(f"hierbench {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
