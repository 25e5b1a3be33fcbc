"""The report's tables, as pandas DataFrames, from profiles and run records only (no torch).

- :func:`reduction_table` (a): predicted reduction of hierarchical training against cloud-only
  and split learning per model × dataset × link, at the cut the separation-point search picks
  (8-bit only, and 8- or 4-bit) and at the paper's cut, with the published number beside.
- :func:`sensitivity_table`: which convention or assumption moves each headline number, and by
  how much (one assumption changed at a time).
- :func:`accuracy_table` (b): accuracy per method and cut, final classifier and edge exit.
- (c), the measured runs, are :mod:`hierbench.report.measured`'s.
- :func:`bytes_table` (d): bytes per sample at every cut for every codec.

Fractions are stored as fractions (0.61), times in seconds; the Markdown renderer formats them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd

from hierbench.errors import ConfigError
from hierbench.runtime.codec_bytes import CodecSetting, encoded_bytes, parse_codec
from hierbench.runtime.model import (
    Scenario,
    activation_bytes,
    cloud_only,
    hierarchical,
    predict,
    raw_bytes,
)
from hierbench.runtime.partition import crossover_rate, search
from hierbench.runtime.profiles import Profile
from hierbench.runtime.table import load_for

METHOD_ORDER = {"cloud_only": 0, "split": 1, "hierarchical": 2}


def _profiles(profile_dir: Path, cfg: Sequence, threads: int = 1) -> tuple[Profile, Profile | None]:
    model, stem, dataset = cfg[0], cfg[1], cfg[2]
    return load_for(profile_dir, model, stem, dataset, threads)


def _label(model: str, dataset: str) -> str:
    return (
        {"vgg16": "VGG-16", "resnet18": "ResNet-18"}[model]
        + " / "
        + {
            "cifar10": "CIFAR-10",
            "tiny-imagenet": "Tiny ImageNet",
        }.get(dataset, dataset)
    )


# -- (a) reductions ----------------------------------------------------------------------------
def reduction_table(
    profile_dir: Path, configs: Sequence[Sequence], links: Sequence[str]
) -> pd.DataFrame:
    """Predicted reductions per configuration × link (one epoch; every batch uploaded)."""
    rows = []
    for cfg in configs:
        model, _stem, dataset, paper_cut, published = cfg
        edge, cloud = _profiles(profile_dir, cfg)
        for link in links:
            sc = Scenario(edge, link, cloud=cloud)
            base = cloud_only(sc)
            s8 = search(sc, codecs=["q8"])
            s84 = search(sc, codecs=["q8", "q4"])
            p8 = predict(sc, paper_cut, "q8")
            p4 = hierarchical(sc, paper_cut, "q4")
            row = {
                "config": _label(model, dataset),
                "model": model,
                "dataset": dataset,
                "link": link,
                "t_cloud_only_s": base.total_s,
                "search_q8_cut": s8.best.cut if s8.best else "cloud-only",
                "search_q8_vs_cloud": s8.reduction_vs_cloud,
                "search_q8_vs_split": s8.reduction_vs_split,
                "search_q84_pick": f"{s84.best.cut}/{s84.best.codec}" if s84.best else "cloud-only",
                "search_q84_vs_cloud": s84.reduction_vs_cloud,
                "paper_cut": paper_cut,
                "paper_cut_q8_vs_cloud": p8["hierarchical"].reduction_vs(base),
                "paper_cut_q8_vs_split": p8["hierarchical"].reduction_vs(p8["split"]),
                "paper_cut_q4_vs_cloud": p4.reduction_vs(base),
                "bottleneck": p8["hierarchical"].bottleneck,
                "published_3g": published if link == "3g" else None,
            }
            row["delta_pp"] = (
                100 * (row["paper_cut_q8_vs_cloud"] - published) if link == "3g" else None
            )
            cross = crossover_rate(sc, codecs=["q8"])
            row["crossover_up_bps"] = cross.rate_bps if cross.wins_below else None
            rows.append(row)
    return pd.DataFrame(rows)


# -- sensitivity -------------------------------------------------------------------------------
#: The sensitivity table's rows that are not a changed assumption: the two byte-only limits
#: and the base prediction ("ours"); the last row is the published number.
OURS = "runtime model, base conventions (ours)"
PUBLISHED_ROW = "published"
_NOT_ASSUMPTIONS = 3


def sensitivity_table(
    profile_dir: Path, configs: Sequence[Sequence], link: str = "3g"
) -> pd.DataFrame:
    """Predicted reduction vs cloud-only at the paper's cut, one assumption changed at a time.

    Rows: the variants; columns: the configurations. The first two rows are byte counts only
    (what PAPER.md's 33 / 67 / 33 / 83 % are), the third is the model under the base conventions.
    """
    cols = {
        f"{_label(cfg[0], cfg[2])} @{cfg[3]}": _sensitivity_column(profile_dir, cfg, link)
        for cfg in configs
    }
    rows = list(next(iter(cols.values()))) if cols else []
    return pd.DataFrame(cols).reindex(rows)


def _sensitivity_column(profile_dir: Path, cfg: Sequence, link: str) -> dict[str, float | None]:
    _model, _stem, _dataset, cut, published = cfg
    edge, cloud = _profiles(profile_dir, cfg)
    try:
        edge2, _ = _profiles(profile_dir, cfg, threads=2)
    except ConfigError:  # the 2-thread profile is optional
        edge2 = None
    sc = Scenario(edge, link, cloud=cloud)

    def red(s: Scenario, codec: str = "q8") -> float:
        return hierarchical(s, cut, codec).reduction_vs(cloud_only(s))

    def with_conv(**changes) -> Scenario:
        return replace(sc, conventions=replace(sc.conventions, **changes))

    return {
        # one byte per activation value at 8 bits against one byte per pixel
        "link-bound limit: 1 − (8-bit codes)/(uint8 pixels)": 1
        - edge.cut_numel(cut) / edge.input_bytes,
        "… with scales/offsets, labels, frame headers: 1 − D(s)/D0": 1
        - activation_bytes(sc, cut, "q8") / raw_bytes(sc),
        OURS: red(sc),
        "latency paid by every message (PAPER.md's reading), not once": red(
            with_conv(latency="per-message")
        ),
        "labels as ⌈log2 K⌉ bits, not 1 byte": red(with_conv(labels="log2")),
        "no frame headers": red(with_conv(frame_overhead=False)),
        "10 epochs, baseline's raw data uploaded once": red(
            replace(with_conv(upload="once"), epochs=10)
        ),
        "cloud as fast as one edge core (factor 1)": red(replace(sc, cloud_speedup=1.0)),
        "cloud 100× one edge core": red(replace(sc, cloud_speedup=100.0)),
        "edge = 2 cores of this CPU (2-thread profile)": (
            red(replace(sc, edge=edge2)) if edge2 is not None else None
        ),
        "edge 4× faster than one core (k = 0.25)": red(replace(sc, edge_slowdown=0.25)),
        "edge 4× slower (k = 4)": red(replace(sc, edge_slowdown=4.0)),
        "4-bit activations instead of 8-bit": red(sc, "q4"),
        "fp32 activations": red(sc, "fp32"),
        "the search's cut (8-bit) instead of the paper's": search(
            sc, codecs=["q8"]
        ).reduction_vs_cloud,
        PUBLISHED_ROW: published,
    }


def assumptions(sens: pd.DataFrame, column: str) -> pd.Series:
    """The rows of one column of the sensitivity table that change an assumption."""
    return sens[column].drop([PUBLISHED_ROW]).iloc[_NOT_ASSUMPTIONS:].dropna()


def closest_assumption(sens: pd.DataFrame, column: str) -> str:
    """The changed assumption whose prediction lies closest to the published number."""
    return str((assumptions(sens, column) - sens.loc[PUBLISHED_ROW, column]).abs().idxmin())


# -- (d) bytes -----------------------------------------------------------------------------------
BYTES_CODECS = ("fp32", "q8", "q4", "q2", "q4+zstd")


def bytes_table(profile_dir: Path, configs: Sequence[Sequence]) -> pd.DataFrame:
    """Bytes per sample on the wire at every cut for every codec (frame header amortised over a
    batch of 128, labels excluded), beside the raw uint8 image."""
    rows = []
    for cfg in configs:
        model, _stem, dataset, paper_cut, _ = cfg
        edge, _ = _profiles(profile_dir, cfg)
        b = edge.batch
        for cut in edge.cuts:
            numel = edge.cut_numel(cut)
            row = {
                "config": _label(model, dataset),
                "cut": cut + (" (paper)" if cut == paper_cut else ""),
                "shape": "×".join(str(v) for v in edge.block(cut).out_shape or ()),
                "raw_uint8": edge.input_bytes / b,
            }
            for name in BYTES_CODECS:
                codec: CodecSetting = parse_codec(name)
                row[name] = (
                    encoded_bytes(numel, codec, zstd_ratio=edge.zstd_ratio(cut, codec.wire)) / b
                )
            row["q8_over_raw"] = row["q8"] / row["raw_uint8"]
            rows.append(row)
    return pd.DataFrame(rows)


def accuracy_table(records: Sequence[dict]) -> pd.DataFrame:
    """Test accuracy per run: final classifier and edge exit after the last epoch, the best
    epoch, and the drop against the standard (cloud-only) run of the same budget."""
    rows = []
    for rec in records:
        cfg = rec["config"]
        eps = [e for e in rec["epochs"] if e.get("final_acc") is not None]
        if not eps:
            continue
        last = eps[-1]
        n_train = rec["steps_per_epoch"] * cfg["batch_size"]
        rows.append(
            {
                "budget": budget_label(rec),
                "method": cfg["method"],
                "cut": cfg["cut"] if cfg["method"] != "cloud_only" else "",
                "codec": cfg["codec"] if cfg["method"] != "cloud_only" else "",
                "epochs": len(rec["epochs"]),
                "train_images_per_epoch": n_train,
                "test_images": last.get("eval_samples"),
                "final_acc": last["final_acc"],
                "exit_acc": last.get("exit_acc"),
                "best_final_acc": max(e["final_acc"] for e in eps),
                "cloud_train_loss": last.get("cloud_train_loss"),
                "edge_train_loss": last.get("edge_train_loss"),
                "id": rec.get("_id", ""),
            }
        )
    df = pd.DataFrame(rows)
    if not len(df):
        return df
    std = df[df["method"] == "cloud_only"].set_index("budget")["final_acc"]
    df["drop_vs_standard_pp"] = [
        100 * (std[b] - a) if b in std.index else None
        for b, a in zip(df["budget"], df["final_acc"], strict=True)
    ]
    df["_o"] = df["method"].map(METHOD_ORDER)
    return (
        df.sort_values(["budget", "_o", "cut", "codec"]).drop(columns="_o").reset_index(drop=True)
    )


def budget_label(rec: dict) -> str:
    """``resnet18 cifar10, 2 epochs × 9,984 images`` — what an accuracy figure was bought with."""
    cfg = rec["config"]
    n_train = rec["steps_per_epoch"] * cfg["batch_size"]
    return f"{cfg['model']} {cfg['dataset']}, {cfg['epochs']} epochs × {n_train:,} images" + (
        f" (≤{cfg['limit_per_class']}/class)" if cfg.get("limit_per_class") else ""
    )


__all__ = [
    "accuracy_table",
    "assumptions",
    "budget_label",
    "bytes_table",
    "closest_assumption",
    "reduction_table",
    "sensitivity_table",
]
