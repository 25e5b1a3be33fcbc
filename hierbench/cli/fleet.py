"""``hierbench fleet``: E edges feeding one cloud of W ``torch.distributed`` workers.

    hierbench fleet --edges 4 --workers 2 [--edge-sync fedavg:K] [--partition dirichlet:0.5] ...
        a local run (every role on this machine); writes <run-dir>/record.json (and --out)
    hierbench fleet --role cloud --workers W --edges E --listen HOST:PORT ...
        the cloud job (worker w listens on PORT + w)
    hierbench fleet --role cloud ... --nnodes N --node-rank n --rdzv-endpoint HOST0:PORT0
        node n of a cloud across N machines (W / N workers each, ranks n * W / N onwards;
        HOST0:PORT0: node 0's address and a free port, the same on every node)
    hierbench fleet --role edge --edge-id i --edges E --workers W --connect HOST:PORT ...
        one edge (talks to worker w = i % W at PORT + w); a cloud of N machines:
        --connect HOST0:PORT,HOST1:PORT,... (each node's --listen, in node order); with
        --checkpoint-every N it
        checkpoints, and after a crash the same command with --resume rejoins the running cloud
        (which waits --rejoin-timeout seconds for it; with --policy present it trains on the
        other edges meanwhile)
    hierbench fleet --role merge --run-dir DIR [--out FILE]
        one record from the parts the roles wrote into DIR (copied there from each machine)

Every role takes the same run settings (or ``--config fleet.json``, the file a run writes) and
the same secret (``--secret-file`` or ``$HIERBENCH_SECRET``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


def _fleet_config(args: argparse.Namespace):
    from hierbench.fleet import FleetConfig

    if args.config:
        try:
            obj = json.loads(Path(args.config).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the fleet config {args.config}: {exc}") from None
        return FleetConfig.from_dict(obj)
    from hierbench.cli.train import _run_config, _validate_names

    run = _run_config(args)
    _validate_names(run)
    return FleetConfig(
        run=run,
        edges=args.edges,
        workers=args.workers,
        edge_sync=args.edge_sync,
        partition=args.partition,
        policy=args.policy,
        rejoin_timeout=args.rejoin_timeout,
        ingress=None if args.ingress in (None, "none") else args.ingress,
    )


def _summary(record: dict) -> None:
    t = record["totals"]
    sps = t["samples_per_s"]
    print(
        f"fleet: {t['edges']} edges x {t['workers']} workers, {t['steps']} cloud steps, "
        f"{t['samples']} samples in {t['train_wall_s']:.2f} s"
        + (f" ({sps:.1f} samples/s)" if sps else "")
    )
    for e in record["edges"]:
        if e.get("lost"):
            print(f"  edge {e['edge']} -> worker {e['worker']}: given up (it left no part)")
            continue
        et = e["totals"]
        print(
            f"  edge {e['edge']} -> worker {e['worker']}: {et['steps']} steps, "
            f"busy {et['busy_s']:.2f} s, sync wait {et['sync_wait_s']:.2f} s"
        )
    for w in record["workers"]:
        wt = w["totals"]
        print(
            f"  worker {w['worker']} ({w['backend']}, node {w['node']} {w['hostname']}) "
            f"serves {w['served']}: "
            f"wait {wt['wait_s']:.2f} s, train {wt['train_s']:.2f} s"
        )
    ev = record.get("eval")
    if ev:
        ex = "" if ev["exit_acc"] is None else f", exit {100 * ev['exit_acc']:.2f} %"
        print(
            f"  test accuracy ({ev['eval_samples']} images, mean over edges): final "
            f"{100 * ev['final_acc']:.2f} %{ex}"
        )


def _cmd_fleet(args: argparse.Namespace) -> int:
    from hierbench.cli.train import _host_port, _secret

    if args.role != "cloud" and (args.nnodes, args.node_rank, args.rdzv_endpoint) != (1, 0, None):
        raise ValueError("--nnodes, --node-rank and --rdzv-endpoint are --role cloud settings")

    if args.role == "merge":
        from hierbench.fleet import FleetConfig
        from hierbench.fleet.record import assemble, read_parts, write_json

        if args.run_dir is None:
            raise ValueError("--role merge needs --run-dir (the folder of the roles' parts)")
        run_dir = Path(args.run_dir)
        fcfg = FleetConfig.from_dict(json.loads((run_dir / "fleet.json").read_text()))
        record = assemble(fcfg, *read_parts(run_dir, fcfg.edges, fcfg.workers))
        if fcfg.run.eval == "end":  # the roles must have run with --save-state
            from hierbench.fleet.evaluate import evaluate_fleet

            record["eval"] = evaluate_fleet(fcfg, run_dir, samples=fcfg.run.eval_samples)
        out = write_json(args.out or run_dir / "record.json", record)
        _summary(record)
        print(f"fleet record: {out}")
        return 0

    fcfg = _fleet_config(args)
    if args.role == "local":
        from hierbench.fleet.launcher import run_fleet
        from hierbench.fleet.record import write_json

        run_dir = Path(args.run_dir or "results/fleet/latest")
        command = shlex.join(["hierbench", *sys.argv[1:]])
        record = run_fleet(
            fcfg, run_dir, save_state=args.save_state, backend=args.backend, command=command
        )
        _summary(record)
        print(f"fleet record: {run_dir / 'record.json'}")
        if args.out:
            print(f"fleet record: {write_json(args.out, record)}")
        return 0

    import os

    from hierbench.fleet.cloud import SECRET_ENV
    from hierbench.fleet.record import write_json

    run_dir = Path(args.run_dir or "results/fleet/latest")
    if args.role == "cloud":
        from hierbench.fleet.cloud import launch_cloud

        host, port = _host_port(args.listen)
        os.environ[SECRET_ENV] = _secret(args).decode()
        write_json(run_dir / "fleet.json", fcfg.to_dict())
        launch_cloud(
            fcfg,
            host=host,
            port=port,
            ready_file=run_dir / "ready.json",
            out_dir=run_dir,
            save_state=args.save_state or fcfg.run.eval == "end",  # --role merge scores them
            backend=args.backend,
            accept_timeout=args.accept_timeout,
            nnodes=args.nnodes,
            node_rank=args.node_rank,
            rdzv_endpoint=args.rdzv_endpoint,
        )
        print(f"fleet cloud: parts in {run_dir}")
        return 0

    # --role edge
    from hierbench.fleet.edge import read_ready, run_edge

    if args.edge_id is None:
        raise ValueError("--role edge needs --edge-id i (0 <= i < --edges)")
    worker = fcfg.worker_of(args.edge_id)
    if args.connect_file:

        def address():
            return read_ready(args.connect_file, args.accept_timeout)[worker]
    elif args.connect:
        from hierbench.fleet.config import parse_nodes, worker_address

        address = worker_address(parse_nodes(args.connect, fcfg.workers), fcfg.workers, worker)
    else:
        raise ValueError("--role edge needs --connect HOST:PORT (the cloud's --listen)")
    ckpt_dir = args.checkpoint_dir
    if ckpt_dir is None and (fcfg.run.checkpoint_every or args.resume):
        ckpt_dir = run_dir / "checkpoints"
    part = run_edge(
        fcfg,
        args.edge_id,
        address,
        _secret(args),
        out_dir=run_dir,
        save_state=args.save_state or fcfg.run.eval == "end",  # --role merge scores them
        checkpoint_dir=ckpt_dir,
        resume=args.resume,
        connect_timeout=args.accept_timeout,  # also the wait for the start barrier's welcome
        ingress_file=args.ingress_file or run_dir / "ingress.bucket",
    )
    print(f"fleet edge {args.edge_id}: {part['total_steps']} steps; part in {run_dir}")
    return 0


def _cmd_fleet_accuracy(args: argparse.Namespace) -> int:
    from hierbench.experiments import fleet_accuracy as fa

    command = shlex.join(["hierbench", *sys.argv[1:]])
    if not args.report_only:
        variants = tuple(args.variants or fa.VARIANTS)
        run = {"data_root": args.data_root} if args.data_root else None
        fa.run_fleet_accuracy(args.out, seeds=tuple(args.seeds), variants=variants, run=run)
    print(f"wrote {fa.report(args.out, command)}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    from hierbench.cli.train import _add_run_args

    s = sub.add_parser(
        "fleet",
        help="E edges, one cloud of W torch.distributed workers (local run, or one role)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_args(s)
    s.set_defaults(eval="none", func=_cmd_fleet)
    s.add_argument("--role", default="local", choices=("local", "cloud", "edge", "merge"))
    s.add_argument("--edges", type=int, default=2, help="E edge devices")
    s.add_argument("--workers", type=int, default=1, help="W cloud workers (W <= E)")
    s.add_argument("--edge-sync", default="none", help="none | fedavg:K (average every K steps)")
    s.add_argument("--partition", default="iid", help="iid | dirichlet:ALPHA")
    s.add_argument(
        "--policy",
        default="lockstep",
        choices=("lockstep", "present"),
        help="how a cloud step takes messages: lockstep (step s of every edge; a dropped edge "
        "stalls the cloud until it rejoins) or present (the connected edges' next messages: "
        "the cloud trains on the others while one is away)",
    )
    s.add_argument(
        "--rejoin-timeout",
        type=float,
        default=0.0,
        help="seconds the cloud waits for an edge that dropped to rejoin with --resume "
        "(0: lockstep stops the run, present gives the edge up); edges checkpoint with "
        "--checkpoint-every N into --checkpoint-dir (default <run-dir>/checkpoints)",
    )
    s.add_argument(
        "--ingress",
        default=None,
        metavar="RATE",
        help="a shared cloud ingress of RATE (e.g. 20mbit) that every edge's uplink draws from "
        "besides its own link (edges on one machine; default none)",
    )
    s.add_argument(
        "--ingress-file",
        default=None,
        help="edge: the shared ingress's bucket file, the same for every edge (default "
        "<run-dir>/ingress.bucket)",
    )
    s.add_argument("--config", default=None, help="the fleet config as JSON (fleet.json)")
    s.add_argument("--run-dir", default=None, help="where the roles write their parts")
    s.add_argument("--save-state", action="store_true", help="also save the final models (.pt)")
    s.add_argument(
        "--backend",
        default="auto",
        help="auto (NCCL with a GPU per worker, else gloo) | gloo | nccl",
    )
    s.add_argument(
        "--listen",
        default="127.0.0.1:7800",
        metavar="HOST:PORT",
        help="cloud: worker w listens on PORT + w (w: its global rank)",
    )
    s.add_argument(
        "--nnodes",
        type=int,
        default=1,
        help="cloud: the number of machines the W workers span (N divides W; default 1)",
    )
    s.add_argument(
        "--node-rank",
        type=int,
        default=0,
        help="cloud: this machine's node rank, 0 .. N-1 (node n runs workers n*W/N onwards)",
    )
    s.add_argument(
        "--rdzv-endpoint",
        default=None,
        metavar="HOST:PORT",
        help="cloud, N > 1: node 0's address and a free port, the same on every node (torch's "
        "static rendezvous; also the process group's MASTER_ADDR:MASTER_PORT)",
    )
    s.add_argument(
        "--connect",
        default=None,
        metavar="HOST:PORT[,HOST:PORT...]",
        help="edge: the cloud's --listen, one per cloud node in node order (worker w = i %% W "
        "on node w // (W/N), at that node's PORT + w)",
    )
    s.add_argument("--connect-file", default=None, help="edge: the ready file of a local run")
    s.add_argument("--edge-id", type=int, default=None)
    s.add_argument("--secret-file", default=None)
    s.add_argument(
        "--accept-timeout",
        type=float,
        default=300.0,
        help="seconds to wait for the edges (cloud) or the cloud (edge)",
    )

    s = sub.add_parser(
        "fleet-accuracy",
        help="hierarchical on 4 edges vs 1 at the same samples (IID / Dirichlet, independent / "
        "FedAvg edge models): test accuracy after a short budget",
    )
    s.add_argument("--out", type=Path, default=Path("results/fleet-accuracy"))
    s.add_argument("--seeds", type=int, nargs="+", default=[0])
    s.add_argument("--variants", nargs="+", default=None, help="default: all")
    s.add_argument("--data-root", default=None, help="CIFAR-10 folder (default: the run default)")
    s.add_argument("--report-only", action="store_true")
    s.set_defaults(func=_cmd_fleet_accuracy)
