r"""The runtime model at scale: E edge devices, one cloud job of W data-parallel workers.

Torch-free, like :mod:`hierbench.runtime.model`, whose per-batch terms (``t_E``, ``t_L``,
``t_C``, bytes, cloud factor ``f``, edge slowdown ``k``, latency convention) it reuses: each
edge's numbers are :func:`~hierbench.runtime.model.predict`'s for that edge's link, so with
``E = W = 1`` and no shared ingress every result here is :mod:`~.model`'s.

Topology (issue 17)
-------------------
E edges, each with its own uplink/downlink (one :class:`~hierbench.spec.links.LinkSpec` each,
or one for all), an optional **shared cloud ingress** (one token bucket of rate ``R_in`` that
every edge's uplink also draws from), and a cloud job of W workers trained DDP-style: worker
``w`` serves a fixed subset of edges, the most loaded one ``m = ceil(E / W)``; a cloud step
(the **lockstep** policy) consumes one message from every served edge, then the workers
all-reduce their gradients, so there is one cloud model. ``B`` samples per message.

Terms (seconds; per step = one message per edge; E-independent inputs from :mod:`~.model`)::

    t_E                     edge compute per message (0 for cloud-only)               "edge"
    L_i                     edge i's link term: hierarchical / cloud-only: the pipeline  "link"
                            period's upload (8·D/R_up,i, + τ_i if latency="per-message");
                            split: up_time(D) + down_time(G), τ both ways
    I(E) = E · 8·D / R_in   the shared ingress carrying one message of every edge     "ingress"
    a    = per-message cloud compute: t_C − t_cU (decode, forward, backward; split also
           encodes the gradient); cloud-only: t_full − U_all, U_all = Σ step_s of all blocks / f
    b    = per-step cloud compute: the optimizer step t_cU (cloud-only: U_all), once a step
    C(E) = m · a + b        cloud compute of a step on the most loaded worker          "cloud"
    A(W) = 2(W − 1)/W · 8·P / R_ar + 2(W − 1) · α_ar      ring all-reduce      "all-reduce"
           P = parameter bytes of the cloud part (cloud-only: the whole model), R_ar the
           all-reduce bandwidth, α_ar its per-hop latency; A(1) = 0

Hierarchical training and cloud-only (pipelines: nobody waits for a reply)::

    period(E) = max(t_E, max_i L_i, I(E), C(E) + A(W))
    X(E)      = E · B / period(E)                                      samples/s

    bottleneck: the largest of t_E, max L_i, I(E) and the cloud stage C + A; the cloud stage
    is "all-reduce" when A > C, else "cloud".

Split learning (each edge strictly sequential; the E edges' round trips run concurrently and
meet at the lockstep cloud step, which answers every served edge with its gradient)::

    period(E) = t_E + max_i[max(8·D/R_up,i, I(E)) + τ_i + down_time_i(G)] + C(E) + A(W)
    X(E)      = E · B / period(E)

    bottleneck: the largest share of that sum among t_E, max L_i, I(E), C(E), A(W) (as
    :mod:`~.model` does for split learning).

Workload: ``N = epochs · n_batches`` batches of ``B`` (the scenario's; default one epoch of the
dataset) are spread over the E edges (IID shards), so ``n = ceil(N / E)`` lockstep steps; a
partial last step costs a full one (as :mod:`~.model` counts a partial batch); with ``E > N``
only N edges have a batch, and the workload's steps are those of N edges. First upload of
a step (every edge at once): ``U1 = max(max_i 8·D/R_up,i, I(E)) + max_i τ_i``. Then::

    hierarchical:  T = max[(t_eF + t_enc + U1 + C + A) + (n − 1)·period,  n · t_E]
    cloud-only:    T = (U1 + C + A) + (n − 1)·period
                   upload="once": + (epochs − 1) · ceil(n_batches / E) · (C + A)
    split:         T = n · period

FedAvg of edge models (``Fleet.sync_every = K``; hierarchical and split learning, not cloud-only
whose edges train nothing): after every K-th step each edge sends its edge layers and exit head
(``P`` bytes: the profile's edge blocks' parameters and buffers, the exit head's counted from its
shape, one fp32 frame) and waits for the average before its next step, so the pipeline drains
and refills once per K steps. A cycle of K steps (``txP_i = 8·P / R_up,i``, with the shared
ingress ``max(txP_i, E · 8·P / R_in)``; ``A_P = allreduce_time(E · P, W)``: the workers
all-reduce an (E, P) table; ``dP_i = 8·P / R_down,i + τ_i``)::

    hierarchical:  last  = fill + (K − 1) · period          (the cloud has trained step K)
                   sent  = last − stage − max τ_i            (the last activations have left)
                   cycle = max(last, max(K · t_E, sent) + max txP_i + max τ_i) + A_P + max dP_i
    split:         cycle = K · period + max txP_i + max τ_i + A_P + max dP_i

    per step: cycle / K;  X = E · B · K / cycle;  term "fedavg" = cycle / K − period
    T = floor(n / K) · cycle + (the remaining r = n mod K steps: hierarchical
        max(fill + (r − 1) · period, r · t_E), split r · period)

The bottleneck is "fedavg" when that per-step share exceeds every other term. The averaging's
own arithmetic (E · P additions) and the edge loading the average are not counted;
:func:`saturation` is for independent edge models only.

Saturation: the shared resource ``r`` (the cloud stage or the ingress) *saturates* at the
smallest E at which it is the bottleneck (its term ≥ every other; ties go to the shared
resource). For the pipelines that is where ``r`` is busy all the time and X(E) stops growing in
proportion to E: past it X is flat at the ingress cap ``B · R_in / (8·D)``, or rises towards
the cloud cap ``W · B / a`` as bigger steps amortise ``b + A``. For split learning it is where
``r`` becomes the largest share of the round trip; X then grows towards the same caps.
:func:`saturation` scans E = 1 … ``e_max`` (the first ``len(links)`` with per-edge links).

Assumptions (stated, not measured)
----------------------------------
- **Lockstep**: a step waits for one message from every edge, so the slowest edge (largest
  ``L_i``) paces all; a "next arrivals" policy is not modelled. Deterministic stage times: the
  pipeline formulas are exact in steady state; for split learning the lockstep round trip is
  exact with every edge in phase.
- **Cloud compute scales with samples**: a step over ``m · B`` samples costs ``m`` times the
  per-message forward/backward of the profile (÷ f) plus one optimizer step. Real devices are
  often more efficient at larger batches, so this is conservative for the cloud.
- **All-reduce** (ring: ``2(W − 1)`` hops, each moving ``P / W`` bytes) is not overlapped with
  backward (DDP can overlap it: then ``C + A`` is an upper bound). ``R_ar`` and ``α_ar`` are
  inputs (:data:`DEFAULT_ALLREDUCE_BPS`, :data:`DEFAULT_ALLREDUCE_LATENCY_S`), not measured.
- **Workers are identical**; the edges are identical devices (slowdown ``k``) and differ only
  by their links; W > E leaves workers idle but in the all-reduce.
- **The shared ingress** limits uplink bytes only (edges → cloud); downlink gradients of split
  learning leave through an unshared egress. It adds no latency. Frame and label bytes count as
  in :mod:`~.model`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from hierbench.errors import ConfigError
from hierbench.runtime.codec_bytes import CodecSetting, parse_codec
from hierbench.runtime.model import METHODS, Prediction, Scenario, predict
from hierbench.spec.links import LinkSpec, parse_link, parse_rate

__all__ = [
    "DEFAULT_ALLREDUCE_BPS",
    "DEFAULT_ALLREDUCE_LATENCY_S",
    "DEFAULT_E_MAX",
    "SYNC_OVERHEAD_BYTES",
    "Fleet",
    "Saturation",
    "ScalePrediction",
    "allreduce_time",
    "fedavg_bytes",
    "saturation",
    "scale_predict",
]

#: All-reduce bandwidth between cloud workers assumed unless given: 25 Gbit/s (cloud VM network).
DEFAULT_ALLREDUCE_BPS = 25e9
#: Per-hop latency of the ring all-reduce assumed unless given.
DEFAULT_ALLREDUCE_LATENCY_S = 50e-6
#: How far :func:`saturation` scans E by default.
DEFAULT_E_MAX = 10_000


def _positive_finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be finite and > 0, got {value!r}")
    return float(value)


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
    return value


def allreduce_time(param_bytes: float, workers: int, bps: float, latency_s: float) -> float:
    """Ring all-reduce of ``param_bytes`` over ``workers``:
    ``2(W − 1)/W · 8·P / bps + 2(W − 1) · latency`` (0 for one worker)."""
    _count("workers", workers)
    if workers == 1:
        return 0.0
    return 2 * (workers - 1) / workers * 8.0 * param_bytes / bps + 2 * (workers - 1) * latency_s


@dataclass(frozen=True)
class Fleet:
    """E edges, their links, the shared ingress and the cloud job.

    Args:
        edges: E, the number of edge devices (>= 1).
        links: one link for every edge (a :class:`LinkSpec` or a link string), or a sequence
            of exactly ``edges`` of them (edge i's uplink and downlink).
        workers: W, cloud workers in the data-parallel job (>= 1).
        ingress: the shared cloud ingress rate in bit/s (or a rate string, ``"1gbit"``);
            ``None``: no shared ingress, each edge limited by its own link only.
        allreduce_bps, allreduce_latency_s: the ring all-reduce's bandwidth and per-hop latency.
        sync_every: K of FedAvg of the edge models (every K steps, module docstring); 0:
            independent edge models (the paper's method per device).
    """

    edges: int
    links: LinkSpec | str | Sequence[LinkSpec | str]
    workers: int = 1
    ingress: float | str | None = None
    allreduce_bps: float = DEFAULT_ALLREDUCE_BPS
    allreduce_latency_s: float = DEFAULT_ALLREDUCE_LATENCY_S
    sync_every: int = 0
    per_edge: tuple[LinkSpec, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _count("edges (E)", self.edges)
        _count("workers (W)", self.workers)
        if isinstance(self.links, (LinkSpec, str)):
            per_edge = (parse_link(self.links),) * self.edges
        else:
            per_edge = tuple(parse_link(x) for x in self.links)
            if len(per_edge) != self.edges:
                raise ConfigError(
                    f"links: {len(per_edge)} per-edge links for {self.edges} edges; give one "
                    "link for all or exactly one per edge"
                )
        object.__setattr__(self, "per_edge", per_edge)
        if self.ingress is not None:
            rate = parse_rate(self.ingress) if isinstance(self.ingress, str) else self.ingress
            object.__setattr__(self, "ingress", _positive_finite("ingress rate (bit/s)", rate))
        _positive_finite("allreduce_bps", self.allreduce_bps)
        lat = self.allreduce_latency_s
        if isinstance(lat, bool) or not isinstance(lat, (int, float)) or not 0 <= lat < math.inf:
            raise ConfigError(f"allreduce_latency_s must be finite and >= 0, got {lat!r}")
        k = self.sync_every
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ConfigError(f"sync_every must be an int >= 0 (0: no FedAvg), got {k!r}")

    def with_edges(self, edges: int) -> Fleet:
        """The same fleet with ``edges`` edges: the first ``edges`` per-edge links, or the one
        shared link spec."""
        _count("edges (E)", edges)
        if isinstance(self.links, (LinkSpec, str)):
            return replace(self, edges=edges)
        if edges > len(self.per_edge):
            raise ConfigError(f"edges: {edges} > the {len(self.per_edge)} per-edge links given")
        return replace(self, edges=edges, links=self.per_edge[:edges])

    def lines(self) -> list[str]:
        names = sorted({link.name for link in self.per_edge})
        return [
            f"edges E={self.edges}, links: {', '.join(names)}"
            + (" (one per edge)" if len(names) > 1 else " (every edge)"),
            "shared ingress: "
            + ("none" if self.ingress is None else f"{self.ingress / 1e6:g} Mbit/s"),
            f"cloud: W={self.workers} data-parallel worker(s), lockstep steps (one message per "
            f"served edge), ring all-reduce at {self.allreduce_bps / 1e9:g} Gbit/s, "
            f"{self.allreduce_latency_s * 1e6:g} us/hop",
            "edge models: "
            + (f"FedAvg every {self.sync_every} steps" if self.sync_every else "independent"),
        ]


@dataclass(frozen=True)
class ScalePrediction:
    """One method's steady state and workload time for a fleet.

    ``terms`` holds the named terms of the period (``edge, link, ingress, cloud, all-reduce``,
    seconds per step), ``period_s`` one lockstep step, ``samples_per_s = E · B / period``.
    """

    method: str
    edges: int
    workers: int
    samples_per_s: float
    period_s: float
    total_s: float
    steps: int
    fill_s: float
    bottleneck: str
    terms: dict[str, float]


@dataclass(frozen=True)
class _Coeffs:
    """A method's E-independent numbers (from :mod:`~.model`, per distinct link)."""

    method: str
    batch: int
    t_E: float
    fill_edge: float  # hierarchical: t_eF + t_enc before the first upload
    up_bytes: int
    a: float
    b: float
    param_bytes: int
    link_term: tuple[float, ...]  # L_i per edge
    tx_up: tuple[float, ...]  # 8·D / R_up,i
    lat: tuple[float, ...]  # τ_i
    down: tuple[float, ...]  # split: down_time_i(G); else 0
    sync_bytes: int = 0  # P: one edge's FedAvg message (0: the method has no edge model)
    tx_sync_up: tuple[float, ...] = ()  # 8·P / R_up,i
    sync_down: tuple[float, ...] = ()  # 8·P / R_down,i + τ_i


#: A FedAvg message's bytes besides its values: a codec frame's header and the message
#: envelope (an upper bound; :mod:`hierbench.fleet.wire`).
SYNC_OVERHEAD_BYTES = 128


def fedavg_bytes(profile, cut: str, head: str = "conv") -> int:
    """``P``: the bytes one edge sends (and gets back) at a FedAvg sync: its edge blocks'
    parameters and buffers (the profile's; BatchNorm's integer step counters, 8 bytes per BN,
    are not averaged but are counted), the exit head's parameters and running statistics from
    its shape (:func:`hierbench.models.heads.exit_head`: conv ``9C² + 4C`` plus ``CK + K``;
    minimal ``CK + K``), fp32, plus :data:`SYNC_OVERHEAD_BYTES`."""
    c, k = profile.block(cut).out_shape[0], profile.num_classes
    head_values = c * k + k + (9 * c * c + 4 * c if head == "conv" else 0)
    edge = sum(b.param_bytes + b.buffer_bytes for b in profile.edge_blocks(cut))
    return edge + 4 * head_values + SYNC_OVERHEAD_BYTES


def _coeffs(sc: Scenario, fleet: Fleet, cut: str, codec: CodecSetting) -> dict[str, _Coeffs]:
    by_link: dict[LinkSpec, dict[str, Prediction]] = {}
    for link in fleet.per_edge:
        if link not in by_link:
            by_link[link] = predict(sc.with_link(link), cut, codec)
    cloud = sc.cloud_profile
    u_all = sum(b.step_s for b in cloud.blocks) / sc.cloud_factor
    cloud_params = sum(b.param_bytes for b in cloud.cloud_blocks(cut))
    sync = fedavg_bytes(sc.edge, cut, sc.head) if fleet.sync_every else 0
    out = {}
    for method in METHODS:
        per = [by_link[link][method] for link in fleet.per_edge]
        p_sync = 0 if method == "cloud-only" else sync
        p0 = per[0]
        if method == "cloud-only":
            b = min(u_all, p0.t_C)
            a, params, fill_edge = p0.t_C - b, sum(x.param_bytes for x in cloud.blocks), 0.0
        else:
            b = p0.parts["t_cU"]
            a, params = p0.t_C - b, cloud_params
            fill_edge = p0.parts["t_eF"] + p0.parts["t_enc"] if method == "hierarchical" else 0.0
        out[method] = _Coeffs(
            method=method,
            batch=sc.edge.batch,
            t_E=p0.t_E,
            fill_edge=fill_edge,
            up_bytes=p0.bytes_up,
            a=a,
            b=b,
            param_bytes=params,
            link_term=tuple(p.t_L for p in per),
            tx_up=tuple(8.0 * p.bytes_up / link.up_bps for p, link in zip(per, fleet.per_edge)),
            lat=tuple(link.latency_s for link in fleet.per_edge),
            down=tuple(p.parts.get("t_down", 0.0) for p in per),
            sync_bytes=p_sync,
            tx_sync_up=tuple(8.0 * p_sync / link.up_bps for link in fleet.per_edge),
            sync_down=tuple(
                8.0 * p_sync / link.down_bps + link.latency_s for link in fleet.per_edge
            ),
        )
    return out


def _largest(terms: dict[str, float]) -> str:
    """The first name (in ``terms``' order) whose term is the largest, to rounding: a tie such
    as ``E · 8D/R_in == 8D/R_up`` at ``E = R_in / R_up`` must not hang on the last bit."""
    top = max(terms.values())
    return next(k for k, v in terms.items() if v >= top * (1 - 1e-9))


def _terms(c: _Coeffs, fleet: Fleet, edges: int) -> tuple[dict[str, float], float, float, str]:
    """``(terms, period, first upload U1, bottleneck)`` for the first ``edges`` edges."""
    w = fleet.workers
    ingress = 0.0 if fleet.ingress is None else edges * 8.0 * c.up_bytes / fleet.ingress
    terms = {
        "edge": c.t_E,
        "link": max(c.link_term[:edges]),
        "ingress": ingress,
        "cloud": -(-edges // w) * c.a + c.b,
        "all-reduce": allreduce_time(
            c.param_bytes, w, fleet.allreduce_bps, fleet.allreduce_latency_s
        ),
    }
    up1 = max(max(c.tx_up[:edges]), ingress) + max(c.lat[:edges])
    # ties go to the shared resources, then the link, then the edge
    order = ("ingress", "cloud", "all-reduce", "link", "edge")
    if c.method == "split":
        period = (
            c.t_E
            + max(
                max(tx, ingress) + lat + down
                for tx, lat, down in zip(c.tx_up[:edges], c.lat[:edges], c.down[:edges])
            )
            + terms["cloud"]
            + terms["all-reduce"]
        )
        bottleneck = _largest({k: terms[k] for k in order})
    else:
        stage = terms["cloud"] + terms["all-reduce"]
        period = max(c.t_E, terms["link"], ingress, stage)
        bottleneck = _largest(
            {"ingress": ingress, "cloud": stage, "link": terms["link"], "edge": c.t_E}
        )
        if bottleneck == "cloud" and terms["all-reduce"] > terms["cloud"]:
            bottleneck = "all-reduce"
    return terms, period, up1, bottleneck


def _predict_one(c: _Coeffs, sc: Scenario, fleet: Fleet) -> ScalePrediction:
    e = fleet.edges
    steady_terms, steady, up1, bottleneck = _terms(c, fleet, e)
    steady_all = (steady_terms, steady, up1, bottleneck)
    once = sc.conventions.upload == "once" and c.method == "cloud-only"
    batches: int = sc.n_batches if once else sc.total_batches  # type: ignore[assignment]
    terms, period = steady_terms, steady
    if batches < e:  # more edges than batches: only the first `batches` edges have data
        terms, period, up1, _ = _terms(c, fleet, batches)
    stage = terms["cloud"] + terms["all-reduce"]
    n = -(-batches // min(e, batches))
    if fleet.sync_every and c.sync_bytes:
        return _predict_synced(c, fleet, n, steady_all, (min(e, batches), terms, period, up1))
    if c.method == "split":
        fill = period
        total = n * period
    else:
        fill = c.fill_edge + up1 + stage
        total = fill + (n - 1) * period
        if c.method == "hierarchical":
            total = max(total, n * c.t_E)
        if once:
            total += (sc.epochs - 1) * n * stage
            n *= sc.epochs
    return ScalePrediction(
        method=c.method,
        edges=e,
        workers=fleet.workers,
        samples_per_s=e * c.batch / steady,
        period_s=steady,
        total_s=total,
        steps=n,
        fill_s=fill,
        bottleneck=bottleneck,
        terms=steady_terms,
    )


def _sync_cycle(
    c: _Coeffs, fleet: Fleet, e: int, terms: dict[str, float], period: float, up1: float
) -> tuple[float, float]:
    """``(cycle, fill)``: K steps and their FedAvg sync for the first ``e`` edges (module
    docstring), from those edges' period terms."""
    k = fleet.sync_every
    stage = terms["cloud"] + terms["all-reduce"]
    lat = max(c.lat[:e])
    up_p = max(c.tx_sync_up[:e])
    if fleet.ingress is not None:
        up_p = max(up_p, e * 8.0 * c.sync_bytes / fleet.ingress)
    ar = allreduce_time(
        e * c.sync_bytes, fleet.workers, fleet.allreduce_bps, fleet.allreduce_latency_s
    )
    tail = ar + max(c.sync_down[:e])
    if c.method == "split":
        return k * period + up_p + lat + tail, period
    fill = c.fill_edge + up1 + stage
    last = fill + (k - 1) * period
    sent = last - stage - lat
    return max(last, max(k * c.t_E, sent) + up_p + lat) + tail, fill


def _predict_synced(
    c: _Coeffs,
    fleet: Fleet,
    n: int,
    steady: tuple[dict[str, float], float, float, str],
    run: tuple[int, dict[str, float], float, float],
) -> ScalePrediction:
    """:func:`_predict_one` with FedAvg every K steps: the steady state from all E edges'
    terms (``steady``: terms, period, first upload, bottleneck), the workload's time from the
    edges that have batches (``run``: their number, terms, period, first upload)."""
    k = fleet.sync_every
    terms, period, up1, bottleneck = steady
    cycle, _ = _sync_cycle(c, fleet, fleet.edges, terms, period, up1)
    e_run, r_terms, r_period, r_up1 = run
    r_cycle, fill = _sync_cycle(c, fleet, e_run, r_terms, r_period, r_up1)
    r = n % k
    if not r:
        rest = 0.0
    elif c.method == "split":
        rest = r * r_period
    else:
        rest = max(fill + (r - 1) * r_period, r * c.t_E)
    per_step = cycle / k
    terms = {**terms, "fedavg": per_step - period}
    if terms["fedavg"] > max(v for name, v in terms.items() if name != "fedavg"):
        bottleneck = "fedavg"
    return ScalePrediction(
        method=c.method,
        edges=fleet.edges,
        workers=fleet.workers,
        samples_per_s=fleet.edges * c.batch / per_step,
        period_s=per_step,
        total_s=(n // k) * r_cycle + rest,
        steps=n,
        fill_s=fill,
        bottleneck=bottleneck,
        terms=terms,
    )


def scale_predict(
    sc: Scenario, fleet: Fleet, cut: str, codec: CodecSetting | str
) -> dict[str, ScalePrediction]:
    """All three methods for ``fleet``: ``{"cloud-only": ..., "split": ..., "hierarchical": ...}``.

    ``sc`` gives the devices, workload and conventions (its own link is ignored: the fleet's
    links are used).
    """
    coeffs = _coeffs(sc, fleet, cut, parse_codec(codec))
    return {m: _predict_one(coeffs[m], sc, fleet) for m in METHODS}


@dataclass(frozen=True)
class Saturation:
    """Where a method's shared resources saturate (module docstring): ``cloud_edges`` (the
    cloud stage, compute or all-reduce) and ``ingress_edges``, ``None`` when not within
    ``e_max``; the caps are the E → ∞ limits in samples/s (``None``: no shared ingress)."""

    method: str
    workers: int
    cloud_edges: int | None
    ingress_edges: int | None
    e_max: int
    cloud_cap: float
    ingress_cap: float | None

    @property
    def first(self) -> tuple[str, int] | None:
        """The resource that saturates first and its E (the cloud on a tie)."""
        found = [(e, r) for r, e in (("cloud", self.cloud_edges), ("ingress", self.ingress_edges))]
        found = [(e, r) for e, r in found if e is not None]
        return (min(found)[1], min(found)[0]) if found else None


def _scan(c: _Coeffs, fleet: Fleet, e_max: int) -> dict[str, int]:
    """The first E at which the cloud stage / the ingress is :func:`_terms`' bottleneck."""
    found: dict[str, int] = {}
    for e in range(1, e_max + 1):
        neck = _terms(c, fleet, e)[3]
        key = "cloud" if neck == "all-reduce" else neck
        if key in ("cloud", "ingress") and key not in found:
            found[key] = e
            if len(found) == 2 or fleet.ingress is None:
                break
    return found


def _scan_uniform(c: _Coeffs, fleet: Fleet, e_max: int) -> dict[str, int]:
    """:func:`_scan` for one link shared by every edge, on plain floats (the same comparisons
    as :func:`_terms` and :func:`_largest`; a test holds the two scans equal)."""
    w, a, b, split = fleet.workers, c.a, c.b, c.method == "split"
    ar = allreduce_time(c.param_bytes, w, fleet.allreduce_bps, fleet.allreduce_latency_s)
    per_in = 0.0 if fleet.ingress is None else 8.0 * c.up_bytes / fleet.ingress
    fixed = max(c.link_term[0], c.t_E)  # the terms that do not grow with E
    found: dict[str, int] = {}
    for e in range(1, e_max + 1):
        ing = e * per_in
        cloud = -(-e // w) * a + b
        stage = max(cloud, ar) if split else cloud + ar
        thr = max(ing, stage, fixed) * (1 - 1e-9)
        if ing >= thr:
            found.setdefault("ingress", e)
        elif stage >= thr:
            found.setdefault("cloud", e)
        if len(found) == 2 or (found and fleet.ingress is None):
            break
    return found


def saturation(
    sc: Scenario,
    fleet: Fleet,
    cut: str,
    codec: CodecSetting | str,
    e_max: int | None = None,
) -> dict[str, Saturation]:
    """For each method, the smallest E (1 … ``e_max``) at which the cloud stage and the shared
    ingress become the bottleneck. ``fleet.edges`` is ignored; with per-edge links E runs over
    their first ones (``e_max`` at most their number, and its default)."""
    if fleet.sync_every:
        raise ConfigError(
            "saturation is modelled for independent edge models only (sync_every 0); use "
            "scale_predict for a fleet that averages its edge models"
        )
    uniform = isinstance(fleet.links, (LinkSpec, str))
    limit = DEFAULT_E_MAX if uniform else len(fleet.per_edge)
    e_max = limit if e_max is None else _count("e_max", e_max)
    if e_max > limit and not uniform:
        raise ConfigError(f"e_max {e_max} > the {limit} per-edge links given")
    full = fleet.with_edges(1) if uniform else fleet
    coeffs = _coeffs(sc, full, cut, parse_codec(codec))
    out = {}
    for method, c in coeffs.items():
        found = _scan_uniform(c, full, e_max) if uniform else _scan(c, full, e_max)
        out[method] = Saturation(
            method=method,
            workers=fleet.workers,
            cloud_edges=found.get("cloud"),
            ingress_edges=found.get("ingress"),
            e_max=e_max,
            cloud_cap=math.inf if c.a == 0 else fleet.workers * c.batch / c.a,
            ingress_cap=None
            if fleet.ingress is None
            else c.batch * fleet.ingress / (8.0 * c.up_bytes),
        )
    return out
