"""``hierbench train``, ``edge`` and ``cloud``: one training run, in one process or two (edge and
cloud over TCP), or one role of a run started by hand on each machine."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


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


def _check_out(out: Path | None) -> None:
    """Refuse an ``--out`` the record could not be written to, before anything trains."""
    from hierbench.errors import ConfigError

    if out is None:
        return
    out = Path(out)
    if out.is_dir():
        raise ConfigError(
            f"--out {out} is a folder: give the run record's file name (e.g. {out / 'run.json'})"
        )
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"--out {out}: {parent} is a file, not a folder")
            break


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
    _check_out(args.out)
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
    _check_out(args.out)
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


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to ``sub`` (the `hierbench` parser's subparsers)."""
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
