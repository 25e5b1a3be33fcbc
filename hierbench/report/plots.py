"""The report's plots (matplotlib, Agg backend), from profiles and run records only (no torch).

- :func:`runtime_vs_rate`: predicted training time against uplink rate per method, with the
  measured two-process runs on top; and the predicted reduction of the paper's configurations.
- :func:`reduction_vs_cut`: predicted reduction against cut, per codec, for each configuration.
- :func:`timeline`: edge / link / cloud activity of one measured run of each method.
- :func:`accuracy_curves`: test accuracy per epoch (final classifier and edge exit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from hierbench.report.tables import _label, _profiles
from hierbench.runtime.model import Conventions, Scenario, cloud_only, hierarchical, predict
from hierbench.runtime.validate import predict_record, profile_for
from hierbench.spec.links import parse_link

COLORS = {"cloud_only": "tab:red", "split": "tab:orange", "hierarchical": "tab:blue"}
NAMES = {"cloud_only": "cloud-only", "split": "split learning", "hierarchical": "hierarchical"}


def _rates(lo: float, hi: float, n: int) -> list[float]:
    return [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]


def runtime_vs_rate(
    path: Path,
    timing: Sequence[dict],
    profile_dir: Path,
    configs: Sequence[Sequence],
    *,
    points: int = 41,
) -> Path:
    """Left: this machine's measured scenario (per-batch time vs uplink rate, predicted lines,
    measured markers). Right: predicted reduction vs uplink rate for the paper's configurations
    at the paper's cut (8-bit), with the published 3G numbers."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.6))
    shape = parse_link("3g")
    if timing:
        rec0 = timing[0]
        cfg0 = rec0["config"]
        edge = profile_for(cfg0, profile_dir, int(cfg0.get("threads_edge", 1)))
        rates = _rates(0.1e6, 1e9, points)
        n = 100
        sc0 = Scenario(
            edge,
            shape,
            n_batches=n,
            cloud_speedup=1.0,
            conventions=Conventions(latency="pipelined"),
        )
        matched = edge.batch == int(cfg0.get("batch_size", edge.batch))
        if matched:
            for method, codec, style in (
                ("cloud_only", "q8", "-"),
                ("split", "q8", "-"),
                ("hierarchical", "q8", "-"),
                ("hierarchical", "q4", "--"),
            ):
                ys = []
                for r in rates:
                    sc = sc0.with_link(shape.with_up_rate(r))
                    p = predict(sc, cfg0["cut"], codec)
                    key = {"cloud_only": "cloud-only"}.get(method, method)
                    ys.append(p[key].total_s / n)
                label = f"{NAMES[method]}" + (f" {codec}" if method != "cloud_only" else "")
                ax.plot(
                    [r / 1e6 for r in rates],
                    ys,
                    style,
                    color=COLORS[method],
                    label=label + " (model)",
                )
        for rec in timing:
            cfg = rec["config"]
            link = parse_link(cfg["link"])
            per = rec["totals"]["train_wall_s"] / rec["totals"]["batches"]
            marker = "o" if cfg.get("codec") != "q4" or cfg["method"] != "hierarchical" else "s"
            ax.scatter(
                link.up_bps / 1e6,
                per,
                marker=marker,
                s=40,
                color=COLORS[cfg["method"]],
                edgecolor="black",
                zorder=5,
            )
            if matched:
                pred = predict_record(rec, profile_dir).total_s / rec["totals"]["batches"]
                ax.scatter(link.up_bps / 1e6, pred, marker="x", s=40, color="black", zorder=6)
        ax.scatter(
            [], [], marker="o", color="grey", edgecolor="black", label="measured (2 processes)"
        )
        ax.scatter([], [], marker="x", color="black", label="model at the run's exact link")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("uplink rate (Mbit/s; 3g shape: down = 4 × up, 75 ms)")
        ax.set_ylabel("training time per batch (s)")
        ax.set_title(
            f"{cfg0['model']} {cfg0['dataset']} cut {cfg0['cut']}: edge and cloud = 1 core each"
            + ("" if matched else " (no profile at this batch size: measured only)"),
            fontsize=10,
        )
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    else:
        ax.text(0.5, 0.5, "no timing runs", ha="center", transform=ax.transAxes)

    rates = _rates(0.1e6, 1e9, points)
    for cfg in configs:
        model, _stem, dataset, cut, published = cfg
        edge, cloud = _profiles(profile_dir, cfg)
        sc0 = Scenario(edge, shape, cloud=cloud)
        ys = []
        for r in rates:
            sc = sc0.with_link(shape.with_up_rate(r))
            ys.append(100 * hierarchical(sc, cut, "q8").reduction_vs(cloud_only(sc)))
        line = bx.plot([r / 1e6 for r in rates], ys, label=f"{_label(model, dataset)} @{cut}")[0]
        bx.scatter(
            shape.up_bps / 1e6,
            100 * published,
            marker="*",
            s=120,
            color=line.get_color(),
            edgecolor="black",
            zorder=5,
        )
    bx.scatter([], [], marker="*", s=120, color="grey", edgecolor="black", label="published (3G)")
    bx.axhline(0, color="black", lw=0.8)
    bx.axvline(shape.up_bps / 1e6, color="grey", lw=0.8, ls=":")
    bx.set_xscale("log")
    bx.set_ylim(-100, 100)
    bx.set_xlabel("uplink rate (Mbit/s; 3g shape)")
    bx.set_ylabel("predicted reduction vs cloud-only (%)")
    bx.set_title("paper's configurations, 8-bit, cloud = assumed 10× one core", fontsize=10)
    bx.legend(fontsize=7)
    bx.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reduction_vs_cut(
    path: Path, profile_dir: Path, configs: Sequence[Sequence], link: str = "3g"
) -> Path:
    """Predicted reduction vs cloud-only at every cut, per codec, per configuration."""
    n = len(configs)
    cols = 2 if n > 1 else 1
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.6 * rows), squeeze=False)
    for ax, cfg in zip(axes.flat, configs, strict=False):
        model, _stem, dataset, paper_cut, published = cfg
        edge, cloud = _profiles(profile_dir, cfg)
        sc = Scenario(edge, link, cloud=cloud)
        base = cloud_only(sc)
        cuts = list(edge.cuts)
        for codec, mk in (("fp32", "v"), ("q8", "o"), ("q4", "s"), ("q2", "^")):
            ys = [100 * hierarchical(sc, c, codec).reduction_vs(base) for c in cuts]
            ax.plot(range(len(cuts)), ys, marker=mk, label=codec)
        if paper_cut in cuts:
            ax.scatter(
                cuts.index(paper_cut),
                100 * published,
                marker="*",
                s=160,
                color="gold",
                edgecolor="black",
                zorder=5,
                label=f"published {published:.0%}",
            )
        ax.set_xticks(range(len(cuts)), cuts)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_ylim(-100, 100)
        ax.set_ylabel("reduction vs cloud-only (%)")
        ax.set_title(f"{_label(model, dataset)}, {link}", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def timeline(path: Path, runs: Sequence[dict], *, window_s: float = 20.0) -> Path:
    """Edge compute, uplink, downlink and cloud compute of one run per method, over the first
    ``window_s`` seconds after the edge's first step."""
    fig, axes = plt.subplots(len(runs), 1, figsize=(11, 1.7 * len(runs) + 0.6), squeeze=False)
    lanes = ("edge", "uplink", "downlink", "cloud")
    for ax, rec in zip(axes[:, 0], runs, strict=True):
        cfg = rec["config"]
        t0 = rec["edge_steps"][0]["t0"]
        bars: dict[str, list] = {k: [] for k in lanes}
        for s in rec["edge_steps"]:
            sent = s.get("t_sent", s["t1"])
            bars["edge"].append((s["t0"], sent))
            if s.get("t_grad") is not None:
                bars["edge"].append((s["t_grad"], s["t1"]))
            elif cfg["method"] == "hierarchical":
                bars["edge"].append((sent, s["t1"]))
        for m in (rec.get("link") or {}).get("messages") or []:
            lane = "uplink" if m["direction"] == "sent" else "downlink"
            bars[lane].append((m["tx_start"], m["tx_end"]))
        for s in rec["cloud_steps"]:
            bars["cloud"].append((s["t0"], s["t1"]))
        for i, lane in enumerate(lanes):
            spans = [(a - t0, b - a) for a, b in bars[lane] if a - t0 < window_s and b > a]
            ax.broken_barh(
                spans,
                (len(lanes) - 1 - i - 0.4, 0.8),
                color=("tab:green", "tab:purple", "tab:pink", "tab:blue")[i],
                edgecolor="white",
                linewidth=0.3,
            )
        ax.set_yticks(range(len(lanes)), list(reversed(lanes)))
        ax.set_xlim(0, window_s)
        link = cfg["link"] or "unshaped"
        codec = cfg["codec"] if cfg["method"] != "cloud_only" else "raw uint8"
        ax.set_title(
            f"{NAMES[cfg['method']]} ({link}, {codec}):"
            f" {rec['totals']['train_wall_s'] / rec['totals']['batches']:.2f} s/batch",
            fontsize=9,
            loc="left",
        )
        ax.grid(True, axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("seconds since the edge's first step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def accuracy_curves(path: Path, runs: Sequence[dict]) -> Path:
    """Test accuracy after each epoch: final classifier (solid) and edge exit (dashed)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for rec in runs:
        cfg = rec["config"]
        eps = [e for e in rec["epochs"] if e.get("final_acc") is not None]
        if not eps:
            continue
        xs = [e["epoch"] + 1 for e in eps]
        name = NAMES[cfg["method"]]
        if cfg["method"] != "cloud_only":
            name += f" {cfg['cut']} {cfg['codec']}"
        line = ax.plot(xs, [100 * e["final_acc"] for e in eps], marker="o", label=name)[0]
        if eps[0].get("exit_acc") is not None:
            ax.plot(
                xs,
                [100 * e["exit_acc"] for e in eps],
                ls="--",
                marker=".",
                color=line.get_color(),
                label=name + " (edge exit)",
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
