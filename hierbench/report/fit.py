"""Which edge speed the published numbers imply, and whether the cloud's speed matters.

The paper's edge device is not ours. :func:`edge_speed_fit` scans the edge slowdown ``k`` (the
edge takes ``k`` times as long as the profiled CPU core; ``k < 1``: faster) and finds the single
``k`` whose predicted 3g reductions best fit all four published numbers (least squares), each
configuration's residual there, and the window of ``k`` within which every residual is within
±3 pp. :func:`cloud_factor_table` shows, per configuration and link, how much the assumed cloud
speed (1×, 10×, 100× one core) moves the predicted reduction. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd

from hierbench.runtime.model import Scenario, cloud_only, hierarchical
from hierbench.runtime.table import load_for

__all__ = ["TOLERANCE_PP", "cloud_factor_table", "edge_speed_fit"]

#: The band of agreement with a published number, in percentage points.
TOLERANCE_PP = 3.0
CLOUD_FACTORS = (1.0, 10.0, 100.0)


def _reduction(sc: Scenario, cut: str) -> float:
    return hierarchical(sc, cut, "q8").reduction_vs(cloud_only(sc))


def edge_speed_fit(
    profile_dir: Path, configs: Sequence[Sequence], link: str = "3g", points: int = 241
) -> tuple[pd.DataFrame, dict]:
    """``(curve, fit)``: the predicted reduction of each configuration (columns) at each edge
    slowdown ``k`` on a log grid from 0.05 to 20 (rows), and the fit: best ``k`` (least squares
    over the configurations with a published number), its RMS and per-configuration residuals
    (pp), and the ``k`` window where every residual is within ±:data:`TOLERANCE_PP`."""
    ks = [0.05 * (400 ** (i / (points - 1))) for i in range(points)]
    cols, published = {}, {}
    for cfg in configs:
        model, stem, dataset, cut, pub = cfg
        edge, cloud = load_for(profile_dir, model, stem, dataset, 1)
        sc = Scenario(edge, link, cloud=cloud)
        name = f"{model} / {dataset} @{cut}"
        cols[name] = [_reduction(replace(sc, edge_slowdown=k), cut) for k in ks]
        if pub is not None:
            published[name] = pub
    curve = pd.DataFrame(cols, index=pd.Index(ks, name="edge_slowdown_k"))
    if not published:
        return curve, {}
    resid = pd.DataFrame({n: 100 * (curve[n] - p) for n, p in published.items()}, index=curve.index)
    sse = (resid**2).sum(axis=1)
    best = float(sse.idxmin())
    ok = (resid.abs() <= TOLERANCE_PP).all(axis=1)
    window = _window(list(ok.index), list(ok), best)
    fit = {
        "link": link,
        "best_k": best,
        "best_edge_speed_vs_core": 1 / best,
        "rms_pp": math.sqrt(float(sse.loc[best]) / len(published)),
        "residuals_pp": {n: float(resid.loc[best, n]) for n in published},
        "window_k": window,
        "tolerance_pp": TOLERANCE_PP,
        "any_k_fits_all": bool(ok.any()),
    }
    return curve, fit


def _window(ks: list[float], ok: list[bool], best: float) -> list[float] | None:
    """The contiguous run of ``ok`` grid points around ``best`` (or the first run when the
    best is outside every run), as ``[k_lo, k_hi]``; None when no point fits."""
    runs, start = [], None
    for i, good in enumerate([*ok, False]):
        if good and start is None:
            start = i
        elif not good and start is not None:
            runs.append((ks[start], ks[i - 1]))
            start = None
    if not runs:
        return None
    for lo, hi in runs:
        if lo <= best <= hi:
            return [lo, hi]
    return list(min(runs, key=lambda r: min(abs(r[0] - best), abs(r[1] - best))))


def cloud_factor_table(
    profile_dir: Path, configs: Sequence[Sequence], links: Sequence[str]
) -> pd.DataFrame:
    """Predicted reduction at the paper's cut with the cloud 1×, 10× and 100× one edge core,
    per configuration and link, and the spread between them in percentage points."""
    rows = []
    for cfg in configs:
        model, stem, dataset, cut, _pub = cfg
        edge, _cloud = load_for(profile_dir, model, stem, dataset, 1)
        for link in links:
            row = {"config": f"{model} / {dataset} @{cut}", "link": link}
            vals = []
            for f in CLOUD_FACTORS:
                v = _reduction(Scenario(edge, link, cloud_speedup=f), cut)
                row[f"cloud_{f:g}x"] = v
                vals.append(v)
            row["spread_pp"] = 100 * (max(vals) - min(vals))
            row["matters"] = row["spread_pp"] > 1.0
            rows.append(row)
    return pd.DataFrame(rows)
