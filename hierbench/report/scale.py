"""``hierbench predict-scale``: the many-edges runtime model (:mod:`hierbench.runtime.scale`)
for the paper's four configurations, to E = 1,000 edges: a table of saturation points (CSV +
Markdown), the throughput curves (CSV), a scaling plot (PNG) and a README. Predictions only:
no multi-edge run has been measured yet. Torch-free.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from hierbench.report.md import md_table
from hierbench.report.tables import _label, _profiles
from hierbench.runtime.model import METHODS, Scenario
from hierbench.runtime.scale import (
    DEFAULT_ALLREDUCE_BPS,
    DEFAULT_ALLREDUCE_LATENCY_S,
    DEFAULT_E_MAX,
    Fleet,
    fedavg_bytes,
    saturation,
    scale_predict,
)
from hierbench.runtime.table import PAPER_SETTINGS
from hierbench.spec.links import format_rate

__all__ = ["DEFAULT_SCALE", "edge_grid", "fedavg_rows", "scale_tables", "write_scale_report"]

#: The settings of the committed predictions (results/scale/).
DEFAULT_SCALE: dict[str, Any] = {
    "configs": PAPER_SETTINGS["configs"],
    "links": PAPER_SETTINGS["links"],
    "workers": [1, 8],
    "ingress_bps": 1e9,
    "allreduce_bps": DEFAULT_ALLREDUCE_BPS,
    "allreduce_latency_s": DEFAULT_ALLREDUCE_LATENCY_S,
    "codec": "q8",
    "e_plot": 1000,
    "e_max": DEFAULT_E_MAX,
    # the FedAvg table: edge models averaged every K steps (39: results/fleet-accuracy's
    # setting, twice per 78 steps; 390: once per CIFAR-10 epoch at batch 128), at these E
    "fedavg_every": [39, 390],
    "fedavg_edges": [10, 1000],
}
COLORS = {"cloud-only": "tab:red", "split": "tab:orange", "hierarchical": "tab:blue"}
STYLES = ("-", "--", ":", "-.")


def edge_grid(e_max: int, per_decade: int = 12) -> list[int]:
    """Distinct integers from 1 to ``e_max``, about ``per_decade`` per decade (log-spaced)."""
    n = max(2, round(per_decade * math.log10(e_max)) + 1)
    return sorted({max(1, round(e_max ** (i / (n - 1)))) for i in range(n)} | {1, e_max})


def _fleet(settings: dict, edges: int, link: str, workers: int, sync_every: int = 0) -> Fleet:
    return Fleet(
        edges,
        link,
        workers=workers,
        ingress=settings["ingress_bps"],
        allreduce_bps=settings["allreduce_bps"],
        allreduce_latency_s=settings["allreduce_latency_s"],
        sync_every=sync_every,
    )


def fedavg_rows(profile_dir: Path, settings: dict) -> list[dict[str, Any]]:
    """What averaging the edge models every K steps costs: one row per configuration × link ×
    E × K × method with an edge model (hierarchical, split), at the largest W; throughput with
    independent edge models and with FedAvg, their ratio, and the bottleneck."""
    rows = []
    w = max(settings["workers"])
    for cfg in settings["configs"]:
        model, _stem, dataset, cut = cfg[0], cfg[1], cfg[2], cfg[3]
        edge, cloud = _profiles(profile_dir, cfg)
        size = fedavg_bytes(edge, cut)
        for link in settings["links"]:
            sc = Scenario(edge, link, cloud=cloud)
            for e in settings["fedavg_edges"]:
                alone = scale_predict(sc, _fleet(settings, e, link, w), cut, settings["codec"])
                for k in settings["fedavg_every"]:
                    synced = scale_predict(
                        sc, _fleet(settings, e, link, w, k), cut, settings["codec"]
                    )
                    for method in ("hierarchical", "split"):
                        a, f = alone[method], synced[method]
                        rows.append(
                            {
                                "config": _label(model, dataset),
                                "cut": cut,
                                "link": link,
                                "edges": e,
                                "workers": w,
                                "fedavg_every": k,
                                "method": method,
                                "fedavg_bytes": size,
                                "samples_per_s_independent": a.samples_per_s,
                                "samples_per_s_fedavg": f.samples_per_s,
                                "slowdown": a.samples_per_s / f.samples_per_s,
                                "bottleneck_fedavg": f.bottleneck,
                            }
                        )
    return rows


def fedavg_markdown(rows: Sequence[dict[str, Any]]) -> str:
    header = [
        "configuration", "link", "E", "K", "method", "edge model (MB)",
        "samples/s, independent", "samples/s, FedAvg", "slowdown", "bottleneck with FedAvg",
    ]  # fmt: skip
    return md_table(
        header,
        (
            [
                f"{r['config']} @{r['cut']}",
                r["link"],
                f"{r['edges']:,}",
                r["fedavg_every"],
                r["method"],
                f"{r['fedavg_bytes'] / 1e6:.1f}",
                _x(r["samples_per_s_independent"]),
                _x(r["samples_per_s_fedavg"]),
                f"{r['slowdown']:.2f}x",
                r["bottleneck_fedavg"],
            ]
            for r in rows
        ),
    )


def scale_tables(
    profile_dir: Path, settings: dict
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(saturation rows, throughput rows)``: one saturation row per configuration × link ×
    workers × method; one throughput row per those × E on :func:`edge_grid`."""
    sat_rows, curve_rows = [], []
    e_plot = int(settings["e_plot"])
    for cfg in settings["configs"]:
        model, _stem, dataset, cut = cfg[0], cfg[1], cfg[2], cfg[3]
        edge, cloud = _profiles(profile_dir, cfg)
        for link in settings["links"]:
            sc = Scenario(edge, link, cloud=cloud)
            for w in settings["workers"]:
                sats = saturation(
                    sc, _fleet(settings, 1, link, w), cut, settings["codec"], settings["e_max"]
                )
                curves = {
                    e: scale_predict(sc, _fleet(settings, e, link, w), cut, settings["codec"])
                    for e in edge_grid(e_plot)
                }
                base = {"config": _label(model, dataset), "cut": cut, "link": link, "workers": w}
                for method in METHODS:
                    s = sats[method]
                    one, top = curves[1][method], curves[e_plot][method]
                    first = s.first
                    sat_rows.append(
                        {
                            **base,
                            "method": method,
                            "samples_per_s_e1": one.samples_per_s,
                            "bottleneck_e1": one.bottleneck,
                            "cloud_saturates_at_e": s.cloud_edges,
                            "ingress_saturates_at_e": s.ingress_edges,
                            "first_saturation": f"{first[0]}@{first[1]}" if first else "",
                            "e_max_scanned": s.e_max,
                            f"samples_per_s_e{e_plot}": top.samples_per_s,
                            f"bottleneck_e{e_plot}": top.bottleneck,
                            "epoch_s_e1": one.total_s,
                            f"epoch_s_e{e_plot}": top.total_s,
                            "cloud_cap_samples_per_s": s.cloud_cap,
                            "ingress_cap_samples_per_s": s.ingress_cap,
                        }
                    )
                    for e, preds in curves.items():
                        p = preds[method]
                        curve_rows.append(
                            {
                                **base,
                                "method": method,
                                "edges": e,
                                "samples_per_s": p.samples_per_s,
                                "period_s": p.period_s,
                                "bottleneck": p.bottleneck,
                                "epoch_s": p.total_s,
                            }
                        )
    return sat_rows, curve_rows


def _write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
            )


def _e(v: int | None, e_max: int) -> str:
    return f"> {e_max:,}" if v is None else f"{v:,}"


def _x(v: float | None) -> str:
    if v is None:
        return "–"
    return "∞" if math.isinf(v) else f"{v:,.0f}"


def saturation_markdown(rows: Sequence[dict[str, Any]], e_plot: int) -> str:
    header = [
        "configuration",
        "link",
        "W",
        "method",
        "samples/s, E=1",
        "cloud saturates at E",
        "ingress saturates at E",
        f"samples/s, E={e_plot:,}",
        f"bottleneck, E={e_plot:,}",
        "cloud cap",
        "ingress cap",
    ]
    return md_table(
        header,
        (
            [
                f"{r['config']} @{r['cut']}",
                r["link"],
                str(r["workers"]),
                r["method"],
                _x(r["samples_per_s_e1"]),
                _e(r["cloud_saturates_at_e"], r["e_max_scanned"]),
                _e(r["ingress_saturates_at_e"], r["e_max_scanned"]),
                _x(r[f"samples_per_s_e{e_plot}"]),
                r[f"bottleneck_e{e_plot}"],
                _x(r["cloud_cap_samples_per_s"]),
                _x(r["ingress_cap_samples_per_s"]),
            ]
            for r in rows
        ),
    )


def scaling_plot(curve_rows: Sequence[dict[str, Any]], settings: dict, path: Path) -> Path:
    """samples/s against E (log–log), one panel per configuration × link, one line per method
    (a line style per W)."""
    configs = list(dict.fromkeys((r["config"], r["cut"]) for r in curve_rows))
    links = list(settings["links"])
    fig, axes = plt.subplots(
        len(configs), len(links), figsize=(4.2 * len(links), 3.2 * len(configs)), squeeze=False
    )
    for i, (config, cut) in enumerate(configs):
        for j, link in enumerate(links):
            ax = axes[i][j]
            for k, w in enumerate(settings["workers"]):
                for method in METHODS:
                    pts = [
                        r
                        for r in curve_rows
                        if (r["config"], r["cut"], r["link"], r["workers"], r["method"])
                        == (config, cut, link, w, method)
                    ]
                    ax.plot(
                        [r["edges"] for r in pts],
                        [r["samples_per_s"] for r in pts],
                        STYLES[k % len(STYLES)],
                        color=COLORS[method],
                        label=f"{method}, W={w}",
                    )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"{config} @{cut}, {link}", fontsize=9)
            if i == len(configs) - 1:
                ax.set_xlabel("edge devices E")
            if j == 0:
                ax.set_ylabel("samples/s (predicted)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels) // 2 or 1, fontsize=8)
    fig.suptitle(
        "Predicted training throughput vs number of edge devices (runtime model; no measured "
        "points yet)",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _readme(settings: dict, table_md: str, command: str, fedavg_md: str = "") -> str:
    e_plot = settings["e_plot"]
    return "\n".join(
        [
            "# Scaling to many edges: predictions (runtime model, not measured)",
            "",
            "**These are predictions** for the paper's configurations at E up to "
            f"{e_plot:,}, which no",
            "machine here can run. The model itself is checked against measured fleet runs on",
            "this 2-core machine (E = 1, 2, 4 edge processes, W = 1, 2 gloo workers, a shared",
            "ingress) in [`measured/`](measured/README.md) (`hierbench scale`).",
            "",
            f"Made by `{command}` from the committed 1-thread CPU profiles in",
            "`results/profiles/` with `hierbench.runtime.scale` (its docstring states every",
            "formula and assumption).",
            "",
            "Inputs and assumptions:",
            "",
            "- edge: one core of the profiled CPU; cloud: ASSUMED 10x faster than that core (the",
            "  cloud factor; no GPU profile is committed), per worker; the paper's cut, "
            f"{settings['codec']} activations;",
            f"- E edges, each on the preset link ({', '.join(settings['links'])}); "
            + (
                "no shared cloud ingress;"
                if settings["ingress_bps"] is None
                else f"a shared cloud ingress of {format_rate(settings['ingress_bps'])};"
            ),
            f"- W cloud workers ({', '.join(map(str, settings['workers']))}), data parallel, "
            "lockstep steps (one message per served edge), ring all-reduce at "
            f"{format_rate(settings['allreduce_bps'])} and "
            f"{settings['allreduce_latency_s'] * 1e6:g} us per hop, not overlapped;",
            "- cloud compute of a step grows with its samples (per-message forward/backward x "
            "messages, one optimizer step); the most loaded worker serves ceil(E/W) edges, so an "
            "E that is not a multiple of W shows as teeth in the W > 1 curves;",
            "- saturation: the smallest E at which the cloud (compute + all-reduce) or the "
            f"ingress is the bottleneck, scanned to E = {settings['e_max']:,};",
            "- caps: the E -> infinity limits (cloud: W x B / per-message cloud time; ingress: "
            "B x R_in / bytes per message);",
            "- epoch times (in `saturation.csv`): one epoch of the dataset spread over the E "
            "edges.",
            "",
            "Files: `saturation.csv` / `.md` (this table), `throughput.csv` (the curves), "
            "`scaling.png` (the plot).",
            "",
            "## Saturation points",
            "",
            table_md,
            "",
            f"## Throughput vs E (to {e_plot:,})",
            "",
            "![scaling](scaling.png)",
            "",
            "## What averaging the edge models costs (FedAvg every K steps)",
            "",
            "SplitFed-style averaging of the edge layers and exit heads through the cloud "
            f"(`--edge-sync fedavg:K` in a fleet run), at W = {max(settings['workers'])}: at "
            "every K-th step each edge uploads its edge model, the cloud averages, each edge "
            "downloads the average and waits for it, so the pipeline drains and refills once "
            "per K steps (the cycle in `hierbench.runtime.scale`; checked against measured runs "
            "in [`fedavg/`](fedavg/README.md)). Edge model: parameters and BatchNorm statistics "
            "of the edge layers and the conv exit head, fp32. Slowdown: throughput with "
            "independent edge models over throughput with FedAvg. `fedavg.csv` has the rows.",
            "",
            fedavg_md,
            "",
        ]
    )


def write_scale_report(
    out: Path,
    profile_dir: Path,
    settings: dict | None = None,
    *,
    command: str = "hierbench predict-scale",
) -> dict[str, Path]:
    """Write ``saturation.csv``, ``saturation.md``, ``throughput.csv``, ``scaling.png`` and
    ``README.md`` into ``out``; returns their paths by name."""
    settings = {**DEFAULT_SCALE, **(settings or {})}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sat_rows, curve_rows = scale_tables(Path(profile_dir), settings)
    fed_rows = fedavg_rows(Path(profile_dir), settings)
    paths = {
        "saturation_csv": out / "saturation.csv",
        "saturation_md": out / "saturation.md",
        "throughput_csv": out / "throughput.csv",
        "plot": out / "scaling.png",
        "fedavg_csv": out / "fedavg.csv",
        "readme": out / "README.md",
    }
    _write_csv(sat_rows, paths["saturation_csv"])
    _write_csv(curve_rows, paths["throughput_csv"])
    table_md = saturation_markdown(sat_rows, int(settings["e_plot"]))
    paths["saturation_md"].write_text(table_md + "\n")
    scaling_plot(curve_rows, settings, paths["plot"])
    _write_csv(fed_rows, paths["fedavg_csv"])
    paths["readme"].write_text(_readme(settings, table_md, command, fedavg_markdown(fed_rows)))
    return paths
