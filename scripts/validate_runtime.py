"""Predicted (runtime model + committed profiles) against measured (two-process run records).

    python scripts/validate_runtime.py results/methods/*/ --profiles results/profiles \
        --out results/methods/validation

Writes ``validation.md``, ``validation.csv`` and ``validation.png`` (predicted against measured,
both latency conventions). Torch is not needed.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
from pathlib import Path

from hierbench.runtime.validate import check_record

LATENCIES = ("pipelined", "per-message")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="folders holding <method>.json run records")
    p.add_argument("--profiles", type=Path, default=Path("results/profiles"))
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    checks = []
    for folder in args.runs:
        for rec in sorted(folder.glob("*.json")):
            for lat in LATENCIES:
                checks.append(check_record(rec, args.profiles, latency=lat))
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "validation.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "record",
                "method",
                "link",
                "batches",
                "latency",
                "predicted_s",
                "measured_s",
                "error_pct",
                "bottleneck",
            ]
        )
        for c in checks:
            w.writerow(
                [
                    c.record,
                    c.method,
                    c.link,
                    c.batches,
                    c.latency,
                    f"{c.predicted_s:.3f}",
                    f"{c.measured_s:.3f}",
                    f"{c.error_pct:.2f}",
                    c.bottleneck,
                ]
            )
    lines = [
        "# Runtime model: predicted against measured",
        "",
        f"Command: `{command}`",
        "",
        "Measured: training wall clock of two-process runs (edge and cloud pinned to one core each "
        "of this machine, loopback TCP through the engine's token bucket; run records beside this "
        "file). Predicted: `hierbench.runtime.model` from the committed 1-thread CPU profile of "
        "the same model, for the edge and for the cloud (cloud speed factor 1: the cloud of these "
        "runs is the same CPU), with the run's link, codec, gradient codec and number of batches. "
        "Codec time is not in the model (free).",
        "",
        "| link | method | batches | measured s | predicted s (pipelined latency) | error | "
        "predicted s (per-message latency, PAPER.md) | error | bottleneck |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by = {(c.record, c.latency): c for c in checks}
    worst = 0.0
    for rec in sorted({c.record for c in checks}):
        a, b = by[(rec, "pipelined")], by[(rec, "per-message")]
        worst = max(worst, abs(a.error_pct))
        lines.append(
            f"| {a.link} | {a.method} | {a.batches} | {a.measured_s:.1f} | {a.predicted_s:.1f} | "
            f"{a.error_pct:+.1f} % | {b.predicted_s:.1f} | {b.error_pct:+.1f} % | {a.bottleneck} |"
        )
    lines += [
        "",
        f"Largest |error| with pipelined latency: {worst:.1f} %. Pipelined latency (τ paid once, "
        "as a sender with messages in flight pays it) is the convention hierbench's model uses "
        "for validation; PAPER.md's reconstruction pays τ in every pipeline period.",
        "",
    ]
    (args.out / "validation.md").write_text("\n".join(lines))
    _plot(checks, args.out / "validation.png")
    print("\n".join(lines))
    return 0


def _plot(checks, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    marker = {"cloud_only": "o", "split": "s", "hierarchical": "^"}
    color = {"pipelined": "tab:blue", "per-message": "tab:orange"}
    for c in checks:
        ax.scatter(c.measured_s, c.predicted_s, marker=marker[c.method], color=color[c.latency])
    top = max(max(c.measured_s, c.predicted_s) for c in checks) * 1.1
    ax.plot([1, top], [1, top], color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured training time (s)")
    ax.set_ylabel("predicted (s)")
    ax.set_title("Runtime model vs two-process runs")
    for m, mk in marker.items():
        ax.scatter([], [], marker=mk, color="black", label=m)
    for lat, col in color.items():
        ax.scatter([], [], marker="o", color=col, label=f"latency: {lat}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
