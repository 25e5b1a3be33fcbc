"""``hierbench reproduce`` and ``report``: a preset's grid of runs into ``results/<preset>/``,
and the tables, plots and README of a results folder."""

from __future__ import annotations

import argparse
from pathlib import Path


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


def _git_commit(paths: list[Path], message: str, say) -> None:
    """Commit ``paths`` (only them) in the repository around them; retried while another git
    process holds the index; a failure is reported, never fatal (the next commit catches up)."""
    import subprocess
    import time

    for attempt in range(10):
        add = subprocess.run(["git", "add", "--", *map(str, paths)], capture_output=True, text=True)
        if add.returncode == 0:
            res = subprocess.run(
                ["git", "commit", "-q", "-m", message, "--", *map(str, paths)],
                capture_output=True,
                text=True,
            )
            if res.returncode == 0 or "nothing to commit" in res.stdout + res.stderr:
                return
            err = res.stderr
        else:
            err = add.stderr
        if "index.lock" not in err:
            break
        time.sleep(3 + attempt)
    say(f"git commit failed (committed later): {err.strip()[:300]}")


def _cmd_campaign(args: argparse.Namespace) -> int:
    import shlex
    import sys

    from hierbench.experiments.campaign import CampaignRunner
    from hierbench.experiments.converge import get_campaign

    campaign = get_campaign(args.name)
    out = args.out or Path("results") / campaign.name

    def say(text: str) -> None:
        print(text, flush=True)

    def on_record(path: Path) -> None:
        from hierbench import report

        written = report.write_converge_report(out, args.profiles)
        if args.commit:
            files = [path, out / "campaign.json", out / "tuning.json", *written]
            _git_commit(
                [f for f in files if f.exists()], f"{campaign.name}: {path.stem} finished", say
            )

    if args.supervise:
        from hierbench.experiments.campaign import supervise

        child_argv = [a for a in sys.argv[1:] if a != "--supervise"]
        return supervise(child_argv, out, stale_s=args.stale_s, log=say)
    command = "hierbench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    runner = CampaignRunner(
        campaign, out, progress=args.progress, log=say, on_record=on_record, command=command
    )
    if args.status:
        for run, state in runner.status():
            print(f"{state:8s} {run.id}")
        return 0
    if args.report_only:
        from hierbench import report

        for f in report.write_converge_report(out, args.profiles):
            print(f)
        return 0
    stages = tuple(args.stage.split(",")) if args.stage else None
    runner.run(only_stages=stages, max_runs=args.max_runs)
    on_record(out / "campaign.json")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to ``sub`` (the `hierbench` parser's subparsers)."""
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
    s.add_argument(
        "--accept-other-commits",
        action="store_true",
        help="with --resume: keep finished runs made by another commit (refused by default)",
    )
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

    s = sub.add_parser(
        "campaign",
        help="a resumable campaign of accuracy runs (converge: tuned baselines, seeds, controls)",
    )
    s.add_argument("name", help="converge | converge-ci")
    s.add_argument("--out", type=Path, default=None, help="results folder (default results/NAME)")
    s.add_argument("--profiles", type=Path, default=Path("results/profiles"))
    s.add_argument("--status", action="store_true", help="list each run's state and exit")
    s.add_argument("--report-only", action="store_true", help="regenerate the report and exit")
    s.add_argument("--stage", default=None, help="only these stages (sweep,final,plateau)")
    s.add_argument("--max-runs", type=int, default=None, help="stop after this many runs")
    s.add_argument(
        "--commit", action="store_true", help="git-commit each finished record and the report"
    )
    s.add_argument("--progress", action="store_true", help="per-step progress line on stderr")
    s.add_argument(
        "--supervise",
        action="store_true",
        help="run the driver as a child; restart it if it dies or stops making progress",
    )
    s.add_argument(
        "--stale-s",
        type=float,
        default=1800.0,
        help="with --supervise: seconds without a checkpoint or record before a restart",
    )
    s.set_defaults(func=_cmd_campaign)
