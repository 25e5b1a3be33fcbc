"""``hierbench predict``: the runtime model's table for one model, dataset and link (no torch).

For every cut × codec: bytes per batch, edge memory, predicted total time of the three methods,
hierarchical training's reduction against cloud-only (under both upload conventions) and against
split learning, the per-batch stage times and the bottleneck; then the cut the separation-point
search picks and the crossover rate. Every table is preceded by the scenario's inputs,
assumptions and conventions.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from hierbench.errors import ConfigError
from hierbench.runtime.codec_bytes import DEFAULT_CODECS, CodecSetting
from hierbench.runtime.model import Conventions, Scenario, cloud_only, hierarchical
from hierbench.runtime.partition import Crossover, SearchResult, crossover_rate, search
from hierbench.runtime.profiles import Profile, load_profile, profile_filename

__all__ = [
    "PAPER_CONFIGS",
    "PAPER_SETTINGS",
    "find_profile",
    "format_duration",
    "prediction_rows",
    "render",
    "write_csv",
]

#: The paper's four headline configurations: (model, dataset, paper's cut, published reduction).
PAPER_CONFIGS = (
    ("vgg16", "cifar10", "pool4", 0.29),
    ("resnet18", "cifar10", "layer3", 0.61),
    ("vgg16", "tiny-imagenet", "pool4", 0.25),
    ("resnet18", "tiny-imagenet", "layer4", 0.81),
)

#: The settings of the paper-configuration tables (``hierbench.report``'s default): the four
#: configurations as ``[model, stem, dataset, cut, published]`` with the torchvision-style
#: (imagenet) stem, the links of the runtime-model tables, and the link of the headline.
PAPER_SETTINGS = {
    "configs": [[m, "imagenet", d, cut, red] for m, d, cut, red in PAPER_CONFIGS],
    "links": ["3g", "4g", "wifi"],
    "headline_link": "3g",
}


def find_profile(
    profile_dir: str | Path,
    model: str,
    stem: str,
    dataset: str,
    device: str = "cpu",
    threads: int | None = 1,
) -> Path:
    """The profile file for this configuration in ``profile_dir``.

    Raises:
        ConfigError: no such file; the message lists what the folder has and how to make one.
    """
    path = Path(profile_dir) / profile_filename(model, stem, dataset, device, threads)
    if path.is_file():
        return path
    have = (
        sorted(p.name for p in Path(profile_dir).glob("*.csv"))
        if Path(profile_dir).is_dir()
        else []
    )
    raise ConfigError(
        f"no profile {path} (have: {', '.join(have) or 'none'}); make one with "
        f"`hierbench profile --model {model} --stem {stem} --dataset {dataset}"
        + (f" --threads {threads}`" if device == "cpu" else " --device cuda`")
        + " or scripts/make_profiles.sh"
    )


def format_duration(seconds: float) -> str:
    """``93.2 s``, ``21.4 min``, ``3.05 h``."""
    if math.isinf(seconds):
        return "inf"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _other(conv: Conventions) -> Conventions:
    return replace(conv, upload="once" if conv.upload == "every-epoch" else "every-epoch")


def prediction_rows(sc: Scenario, result: SearchResult) -> list[dict[str, Any]]:
    """One row per candidate of ``result`` (plain values, for CSV and Markdown)."""
    alt = replace(sc, conventions=_other(sc.conventions))
    base_alt = cloud_only(alt)
    d0 = result.cloud_only.bytes_up
    rows = []
    for c in result.candidates:
        h = c.hierarchical
        rows.append(
            {
                "cut": c.cut,
                "codec": c.codec,
                "bytes_up": h.bytes_up,
                "d_over_d0": h.bytes_up / d0,
                "edge_peak_mib": c.edge_peak_bytes / 2**20,
                "t_cloud_only_s": result.cloud_only.total_s,
                "t_split_s": c.split.total_s,
                "t_hier_s": h.total_s,
                "reduction_vs_cloud": c.reduction_vs_cloud,
                "reduction_vs_split": c.reduction_vs_split,
                f"reduction_vs_cloud_{alt.conventions.upload}": hierarchical(
                    alt, c.cut, c.setting
                ).reduction_vs(base_alt),
                "t_E_ms": h.t_E * 1e3,
                "t_L_ms": h.t_L * 1e3,
                "t_C_ms": h.t_C * 1e3,
                "bottleneck": h.bottleneck,
                "feasible": c.feasible,
                "reasons": "; ".join(c.reasons),
            }
        )
    return rows


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def render(
    sc: Scenario,
    result: SearchResult,
    crossover: Crossover | None = None,
    *,
    title: str | None = None,
    paper_cut: str | None = None,
    paper_reduction: float | None = None,
) -> str:
    """The Markdown report: scenario lines, the table, the choice, the crossover."""
    rows = prediction_rows(sc, result)
    alt = _other(sc.conventions).upload
    base = result.cloud_only
    lines = [f"### {title}" if title else f"### {sc.edge.model} {sc.edge.dataset}", ""]
    lines += [f"- {line}" for line in sc.lines()]
    lines.append(
        f"- cloud-only: D0 = {base.bytes_up:,} B/batch, T = {format_duration(base.total_s)} "
        f"(per batch: link {base.t_L * 1e3:.0f} ms, cloud {base.t_C * 1e3:.0f} ms; "
        f"bottleneck {base.bottleneck})"
    )
    lines.append("")
    header = [
        "cut",
        "codec",
        "D(s) B/batch",
        "D/D0",
        "edge MiB",
        "T split",
        "T hier",
        "reduction vs cloud-only",
        f"(upload {alt})",
        "vs split",
        "t_E/t_L/t_C ms",
        "bottleneck",
    ]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        mark = "" if r["feasible"] else " ✗"
        if result.best and (r["cut"], r["codec"]) == (result.best.cut, result.best.codec):
            mark = " ◀"
        lines.append(
            "| "
            + " | ".join(
                [
                    r["cut"] + (" (paper)" if r["cut"] == paper_cut else ""),
                    r["codec"] + mark,
                    f"{r['bytes_up']:,}",
                    f"{r['d_over_d0']:.2f}",
                    f"{r['edge_peak_mib']:.0f}",
                    format_duration(r["t_split_s"]),
                    format_duration(r["t_hier_s"]),
                    f"{r['reduction_vs_cloud']:+.0%}",
                    f"{r[f'reduction_vs_cloud_{alt}']:+.0%}",
                    f"{r['reduction_vs_split']:+.0%}",
                    f"{r['t_E_ms']:.0f}/{r['t_L_ms']:.0f}/{r['t_C_ms']:.0f}",
                    r["bottleneck"],
                ]
            )
            + " |"
        )
    lines.append("")
    if result.best:
        b = result.best
        lines.append(
            f"**chosen: hierarchical, cut {b.cut}, codec {b.codec}**: predicted "
            f"{b.reduction_vs_cloud:+.1%} vs cloud-only, {b.reduction_vs_split:+.1%} vs split "
            f"learning (bottleneck {b.hierarchical.bottleneck})"
        )
    else:
        lines.append("**chosen: cloud-only** (no feasible cut and codec beats it)")
    if paper_cut is not None:
        at_paper = [c for c in result.candidates if c.cut == paper_cut and c.codec == "q8"]
        if at_paper:
            lines.append(
                f"paper's cut {paper_cut} with 8-bit activations: predicted "
                f"{at_paper[0].reduction_vs_cloud:+.1%} vs cloud-only"
                + (f"; published {paper_reduction:.0%}" if paper_reduction is not None else "")
            )
    for note in result.notes:
        lines.append(f"note: {note}")
    if crossover is not None:
        lines.append(f"crossover: {crossover.describe()}")
    lines.append("✗ = excluded by a constraint, ◀ = chosen")
    return "\n".join(lines)


def predict_report(
    edge: Profile,
    link: str,
    *,
    cloud: Profile | None = None,
    cuts: Sequence[str] | None = None,
    codecs: Sequence[CodecSetting] | None = None,
    with_crossover: bool = True,
    title: str | None = None,
    paper_cut: str | None = None,
    paper_reduction: float | None = None,
    constraints: dict[str, Any] | None = None,
    **scenario_kwargs: Any,
) -> tuple[str, list[dict[str, Any]], SearchResult]:
    """Build the scenario, search, render: ``(markdown, rows, result)``."""
    sc = Scenario(edge, link, cloud=cloud, **scenario_kwargs)
    codecs = list(codecs or DEFAULT_CODECS)
    result = search(sc, cuts, codecs, **(constraints or {}))
    cross = crossover_rate(sc, cuts, codecs, **(constraints or {})) if with_crossover else None
    text = render(
        sc, result, cross, title=title, paper_cut=paper_cut, paper_reduction=paper_reduction
    )
    return text, prediction_rows(sc, result), result


def load_for(
    profile_dir: str | Path, model: str, stem: str, dataset: str, threads: int
) -> tuple[Profile, Profile | None]:
    """The edge (CPU, ``threads``) profile and, if present, a CUDA cloud profile."""
    edge = load_profile(find_profile(profile_dir, model, stem, dataset, "cpu", threads))
    try:
        cloud = load_profile(find_profile(profile_dir, model, stem, dataset, "cuda", None))
    except ConfigError:
        cloud = None
    return edge, cloud
