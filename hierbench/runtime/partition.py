"""Separation-point search: which cut and codec, if any, make hierarchical training win.

``../shared/PAPER.md``, "Separation-point selection" (chosen): enumerate the cuts (block
boundaries) × codec settings; evaluate the runtime model (:mod:`hierbench.runtime.model`) for
each; drop the candidates that break the edge-memory budget or the accuracy tolerance; pick the
fastest; fall back to cloud-only when nothing beats it. Re-run when the link changes —
:func:`crossover_rate` says at which uplink rate the answer flips.

Constraints:

- memory: the profile's peak memory of the edge part (blocks up to the cut + the exit head)
  must be ``<= memory_budget_bytes``;
- accuracy: given a table ``{(cut, codec_name): accuracy}`` and the cloud-only baseline's
  accuracy, a candidate needs ``accuracy >= baseline_accuracy - tolerance`` (absolute, same units
  as the table, e.g. 0.01 = one point on a 0–1 scale). Candidates missing from a given table are
  dropped (unknown accuracy is not assumed fine). Without a table the constraint is skipped and
  :class:`SearchResult` says so (``accuracy_checked=False`` and a note).

No torch import.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from hierbench.runtime.codec_bytes import DEFAULT_CODECS, CodecSetting, parse_codec
from hierbench.runtime.model import Prediction, Scenario, cloud_only, hierarchical, split_learning
from hierbench.spec.links import LinkSpec, format_rate

__all__ = [
    "Candidate",
    "Crossover",
    "SearchResult",
    "crossover_rate",
    "enumerate_candidates",
    "search",
]


@dataclass(frozen=True)
class Candidate:
    """One (cut, codec): its predictions and whether the constraints allow it."""

    cut: str
    codec: str
    setting: CodecSetting
    hierarchical: Prediction
    split: Prediction
    reduction_vs_cloud: float
    reduction_vs_split: float
    edge_peak_bytes: int
    accuracy: float | None
    feasible: bool
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class SearchResult:
    """The search's answer. ``method`` is ``"hierarchical"`` (``best`` is set) or
    ``"cloud-only"`` (no feasible candidate beats the baseline; ``best`` is ``None``)."""

    method: str
    best: Candidate | None
    cloud_only: Prediction
    candidates: tuple[Candidate, ...]
    accuracy_checked: bool
    memory_budget_bytes: int | None
    tolerance: float | None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def reduction_vs_cloud(self) -> float:
        """Predicted reduction of the chosen method against cloud-only (0 for the fallback)."""
        return self.best.reduction_vs_cloud if self.best else 0.0

    @property
    def reduction_vs_split(self) -> float | None:
        """Against split learning at the same cut and codec (``None`` for the fallback)."""
        return self.best.reduction_vs_split if self.best else None

    @property
    def feasible(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.candidates if c.feasible)


def enumerate_candidates(
    sc: Scenario,
    cuts: Sequence[str] | None = None,
    codecs: Iterable[CodecSetting | str] = DEFAULT_CODECS,
    *,
    memory_budget_bytes: int | None = None,
    accuracy: Mapping[tuple[str, str], float] | None = None,
    baseline_accuracy: float | None = None,
    tolerance: float = 0.01,
) -> tuple[Prediction, list[Candidate]]:
    """Evaluate every (cut, codec); return the cloud-only prediction and all candidates, each
    marked feasible or not with its reasons. Arguments as for :func:`search`."""
    if accuracy is not None and baseline_accuracy is None:
        raise ValueError("an accuracy table needs baseline_accuracy (the cloud-only accuracy)")
    base = cloud_only(sc)
    cut_list = list(sc.edge.cuts if cuts is None else cuts)
    codec_list = [parse_codec(c) for c in codecs]
    out = []
    for cut in cut_list:
        mem = sc.edge.edge_peak_bytes(cut, sc.head)
        for codec in codec_list:
            hier = hierarchical(sc, cut, codec)
            spl = split_learning(sc, cut, codec)
            reasons = []
            if memory_budget_bytes is not None and mem > memory_budget_bytes:
                reasons.append(f"edge memory {mem / 2**20:.1f} MiB > budget")
            acc = None
            if accuracy is not None:
                acc = accuracy.get((cut, codec.name))
                if acc is None:
                    reasons.append("accuracy unknown")
                elif acc < baseline_accuracy - tolerance:  # type: ignore[operator]
                    reasons.append(f"accuracy {acc:.4g} < baseline - tolerance")
            out.append(
                Candidate(
                    cut=cut,
                    codec=codec.name,
                    setting=codec,
                    hierarchical=hier,
                    split=spl,
                    reduction_vs_cloud=hier.reduction_vs(base),
                    reduction_vs_split=hier.reduction_vs(spl),
                    edge_peak_bytes=mem,
                    accuracy=acc,
                    feasible=not reasons,
                    reasons=tuple(reasons),
                )
            )
    return base, out


def search(
    sc: Scenario,
    cuts: Sequence[str] | None = None,
    codecs: Iterable[CodecSetting | str] = DEFAULT_CODECS,
    *,
    memory_budget_bytes: int | None = None,
    accuracy: Mapping[tuple[str, str], float] | None = None,
    baseline_accuracy: float | None = None,
    tolerance: float = 0.01,
) -> SearchResult:
    """The fastest feasible (cut, codec) for hierarchical training, or cloud-only.

    Args:
        sc: devices, link, workload, conventions.
        cuts: cuts to try (default: all of the profile's).
        codecs: codec settings to try (default fp32, q8, q4, q2).
        memory_budget_bytes: edge peak-memory budget (``None``: unconstrained).
        accuracy: ``{(cut, codec_name): accuracy}`` of hierarchical training (final classifier);
            ``None`` skips the accuracy constraint.
        baseline_accuracy: the cloud-only accuracy the tolerance is measured from.
        tolerance: the largest accepted accuracy drop (absolute).

    Ties go to the earlier cut, then the earlier codec in ``codecs``. Hierarchical training is
    chosen only if strictly faster than cloud-only.
    """
    base, cands = enumerate_candidates(
        sc,
        cuts,
        codecs,
        memory_budget_bytes=memory_budget_bytes,
        accuracy=accuracy,
        baseline_accuracy=baseline_accuracy,
        tolerance=tolerance,
    )
    notes = []
    if accuracy is None:
        notes.append("accuracy constraint not applied (no accuracy table given)")
    feasible = [c for c in cands if c.feasible]
    best = min(feasible, key=lambda c: c.hierarchical.total_s, default=None)  # first wins ties
    if best is None:
        notes.append("no candidate satisfies the constraints: cloud-only")
    elif best.hierarchical.total_s >= base.total_s:
        notes.append(
            f"no candidate beats cloud-only (best {best.cut}/{best.codec}: "
            f"{best.reduction_vs_cloud:+.1%}): cloud-only"
        )
        best = None
    return SearchResult(
        method="hierarchical" if best else "cloud-only",
        best=best,
        cloud_only=base,
        candidates=tuple(cands),
        accuracy_checked=accuracy is not None,
        memory_budget_bytes=memory_budget_bytes,
        tolerance=tolerance if accuracy is not None else None,
        notes=tuple(notes),
    )


@dataclass(frozen=True)
class Crossover:
    """Where hierarchical training stops (or starts) winning, as a function of the uplink rate.

    ``rate_bps`` is the highest rate on ``[lo_bps, hi_bps]`` where the best feasible hierarchical
    configuration and cloud-only swap places. ``wins_below`` (the usual case): hierarchical is
    faster below ``rate_bps`` and slower above; ``False``: the other way round. ``rate_bps`` is
    ``0.0`` if hierarchical never wins on the range and ``math.inf`` if it always does.
    ``sign_changes`` counts the win/lose flips seen on the scan grid: more than 1 means the
    advantage is not monotone in the rate (``rate_bps`` is then the highest flip).
    ``link`` is the link shape at 1 bit/s uplink (down/up ratio and latency kept).
    """

    rate_bps: float
    wins_below: bool
    lo_bps: float
    hi_bps: float
    sign_changes: int
    link: LinkSpec
    note: str = ""

    def describe(self) -> str:
        span = f"{format_rate(self.lo_bps)}..{format_rate(self.hi_bps)}"
        if self.rate_bps == 0.0:
            text = f"hierarchical never beats cloud-only on {span}"
        elif math.isinf(self.rate_bps):
            text = f"hierarchical beats cloud-only at every uplink rate on {span}"
        else:
            side = "below" if self.wins_below else "above"
            text = f"hierarchical beats cloud-only {side} {format_rate(self.rate_bps)} uplink"
        return text + (f" ({self.note})" if self.note else "")


def crossover_rate(
    sc: Scenario,
    cuts: Sequence[str] | None = None,
    codecs: Iterable[CodecSetting | str] = DEFAULT_CODECS,
    *,
    lo_bps: float = 1e4,
    hi_bps: float = 1e11,
    grid: int = 141,
    rel_tol: float = 1e-6,
    **constraints,
) -> Crossover:
    """The uplink rate below which hierarchical training (the best feasible cut and codec at
    each rate) beats cloud-only.

    The link keeps its shape: the downlink stays in the same ratio to the uplink and the latency
    is kept. ``gap(R) = min over feasible candidates of T_hier(R) − T_cloud(R)``; hierarchical
    wins where ``gap < 0``. The rate is scanned on a log grid of ``grid`` points in
    ``[lo_bps, hi_bps]``, then the highest flip between win and lose is refined by bisection
    to ``rel_tol``.

    Monotonicity: each method's time falls as the rate rises, but their difference need not be
    monotone. With ``max``-shaped pipelines and τ = 0, a candidate with D(s) < D0 whose compute
    floor ``max(t_E, t_C)`` exceeds ``t_full`` wins exactly below ``R* ≈ 8·D0 / max(t_E, t_C)``
    (large N), and the minimum over candidates keeps a single flip; latency, the fill terms or
    the "once" convention can add more. The scan counts
    the flips it sees (``sign_changes``); between grid points a narrow win/lose window can hide.
    ``constraints`` are :func:`search`'s keyword arguments.
    """
    if not 0 < lo_bps < hi_bps:
        raise ValueError(f"need 0 < lo_bps < hi_bps, got {lo_bps}, {hi_bps}")
    base_link: LinkSpec = sc.link  # type: ignore[assignment]
    codec_list = [parse_codec(c) for c in codecs]
    _, cands = enumerate_candidates(sc, cuts, codec_list, **constraints)
    feasible = [(c.cut, c.setting) for c in cands if c.feasible]

    def gap(rate: float) -> float:
        s = sc.with_link(base_link.with_up_rate(rate))
        if not feasible:
            return math.inf
        t_cloud = cloud_only(s).total_s
        return min(hierarchical(s, cut, codec).total_s for cut, codec in feasible) - t_cloud

    rates = [lo_bps * (hi_bps / lo_bps) ** (i / (grid - 1)) for i in range(grid)]
    wins = [gap(r) < 0 for r in rates]
    flips = [i for i in range(grid - 1) if wins[i] != wins[i + 1]]
    shape = base_link.with_up_rate(1.0)
    note = "" if len(flips) <= 1 else f"{len(flips)} flips on the scan: not monotone"
    if not flips:
        return Crossover(math.inf if wins[0] else 0.0, True, lo_bps, hi_bps, 0, shape, note)
    last = flips[-1]
    wins_below = wins[last]
    lo, hi = rates[last], rates[last + 1]
    while hi / lo - 1 > rel_tol:
        mid = math.sqrt(lo * hi)
        if (gap(mid) < 0) == wins_below:
            lo = mid
        else:
            hi = mid
    return Crossover(math.sqrt(lo * hi), wins_below, lo_bps, hi_bps, len(flips), shape, note)
