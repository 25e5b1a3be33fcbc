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
