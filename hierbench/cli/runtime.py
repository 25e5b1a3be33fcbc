"""``hierbench profile``, ``predict``, ``predict-scale`` and ``scale``: measure a device profile
(the runtime model's input), the runtime model's table of methods x cuts x codecs for a link,
its many-edges predictions (saturation table, scaling plot) for the paper's configurations, and
the measured fleet points those predictions are checked against."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hierbench.errors import HierbenchError
from hierbench.spec.datasets import DATASET_SHAPES


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
            args.precision,
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
        precision=args.precision,
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
    from hierbench.runtime.codec_bytes import parse_codec
    from hierbench.runtime.model import Conventions
    from hierbench.runtime.profiles import load_profile

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


def _cmd_predict_scale(args: argparse.Namespace) -> int:
    from hierbench.report.scale import DEFAULT_SCALE, write_scale_report
    from hierbench.spec.links import parse_rate

    settings = dict(DEFAULT_SCALE)
    if args.links:
        settings["links"] = args.links
    if args.workers:
        settings["workers"] = args.workers
    if args.ingress is not None:
        none = args.ingress.strip().lower() == "none"
        settings["ingress_bps"] = None if none else parse_rate(args.ingress)
    if args.allreduce is not None:
        settings["allreduce_bps"] = parse_rate(args.allreduce)
    if args.allreduce_latency_us is not None:
        settings["allreduce_latency_s"] = args.allreduce_latency_us * 1e-6
    settings["codec"] = args.codec
    settings["e_plot"] = args.edges
    settings["e_max"] = args.e_max
    command = "hierbench " + " ".join(sys.argv[1:]) if sys.argv[1:] else "hierbench predict-scale"
    paths = write_scale_report(args.out, args.profile_dir, settings, command=command)
    for path in paths.values():
        print(f"wrote {path}")
    return 0


def _cmd_scale(args: argparse.Namespace) -> int:
    from hierbench.experiments.scale import SETS, run_scale
    from hierbench.report.scale_measured import write_measured_report

    command = "hierbench " + " ".join(sys.argv[1:]) if sys.argv[1:] else "hierbench scale"
    all_points, run, fleet, default_out = SETS[args.set]
    out = args.out or Path(default_out)
    if not args.report_only:
        points = tuple(p for p in all_points if args.max_edges is None or p[0] <= args.max_edges)
        run_scale(out, repeats=args.repeats, points=points, run=run or None, fleet=fleet or None)
    for path in write_measured_report(out, command=command).values():
        print(f"wrote {path}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to ``sub`` (the `hierbench` parser's subparsers)."""
    s = sub.add_parser("profile", help="measure a device profile (per-block costs) as CSV")
    s.add_argument("--model", required=True, choices=["vgg16", "resnet18"])
    s.add_argument("--stem", default="imagenet", choices=["imagenet", "cifar"])
    s.add_argument("--dataset", default="cifar10", choices=list(DATASET_SHAPES))
    s.add_argument("--threads", type=int, default=None, help="CPU threads (default 1 on CPU)")
    s.add_argument("--batch", type=int, default=128)
    s.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "fp32-cl", "bf16", "bf16-cl"],
        help="numeric setting, as a run's precision (bf16 autocast, -cl channels_last)",
    )
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
    s.add_argument("--dataset", required=True, choices=list(DATASET_SHAPES))
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
    s.add_argument(
        "--latency",
        default="pipelined",
        choices=["per-message", "pipelined"],
        help="one-way latency paid once per pipeline (default: what measured runs support) or "
        "by every message",
    )
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

    s = sub.add_parser(
        "predict-scale",
        help="runtime model for E edges and W cloud workers: saturation table + scaling plot "
        "for the paper's configurations (predictions)",
    )
    s.add_argument("--out", type=Path, default=Path("results/scale"))
    s.add_argument("--profile-dir", type=Path, default=Path("results/profiles"))
    s.add_argument("--links", nargs="+", default=None, help="links (default 3g 4g wifi)")
    s.add_argument("--workers", type=int, nargs="+", default=None, help="W values (default 1 8)")
    s.add_argument(
        "--ingress", default=None, help="shared cloud ingress rate, or none (default 1gbit)"
    )
    s.add_argument("--allreduce", default=None, help="all-reduce bandwidth (default 25gbit)")
    s.add_argument("--allreduce-latency-us", type=float, default=None, help="per hop (50)")
    s.add_argument("--codec", default="q8", help="activation codec at the paper's cut")
    s.add_argument("--edges", type=int, default=1000, help="largest E on the plot and table")
    s.add_argument("--e-max", type=int, default=10_000, help="saturation scan limit")
    s.set_defaults(func=_cmd_predict_scale)

    s = sub.add_parser(
        "scale",
        help="the scale preset: local fleet runs at E in {1, 2, 4} x W in {1, 2} (+ a shared "
        "ingress), >= 3 repeats, measured against the scale model",
    )
    s.add_argument(
        "--set",
        default="link-bound",
        choices=["link-bound", "cloud-bound", "fedavg"],
        help="link-bound (default: 250 kbit/s uplinks, cut layer3), cloud-bound (cut layer1, "
        "link unshaped) or fedavg (edge models averaged every 8 steps, 2 Mbit/s, cut layer1)",
    )
    s.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default results/scale/measured (link-bound), results/scale/cloud-bound, "
        "results/scale/fedavg",
    )
    s.add_argument("--repeats", type=int, default=3, help="runs per point (interleaved)")
    s.add_argument("--max-edges", type=int, default=None, help="only the points with E <= this")
    s.add_argument(
        "--report-only", action="store_true", help="the report from the runs already in --out"
    )
    s.set_defaults(func=_cmd_scale)
