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
    hierbench predict-scale            E edges x W cloud workers: saturation table, scaling plot

One module per group of subcommands, each adding its own parsers (in ``--help`` order):
:mod:`~hierbench.cli.info` (info, data, models), :mod:`~hierbench.cli.train` (train, edge,
cloud), :mod:`~hierbench.cli.results` (reproduce, report), :mod:`~hierbench.cli.runtime`
(profile, predict, predict-scale).
"""

from __future__ import annotations

import argparse
import sys

from hierbench.cli import info, results, runtime, train
from hierbench.errors import HierbenchError

__all__ = ["build_parser", "main"]

# The benchmark suite's dependencies: the ``bench`` extra of the wheel (setup.py), not needed by
# the reuse core (ops, codec, transfer) nor by ``info`` / ``models``.
_BENCH_EXTRA = frozenset({"pandas", "torchvision", "matplotlib", "PIL"})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hierbench", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (info, train, results, runtime):
        group.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (HierbenchError, ValueError) as exc:
        print(f"hierbench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in _BENCH_EXTRA:
            raise
        print(
            f"hierbench {args.command}: error: needs {exc.name}, one of the benchmark suite's "
            "dependencies: pip install 'hierbench[bench]'",
            file=sys.stderr,
        )
        return 2
