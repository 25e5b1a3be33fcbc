"""Split a training set across E edges: IID shards or non-IID Dirichlet(alpha) label shards.

Standard library only (no torch, no numpy): the partition is a pure function of the labels, the
number of edges, the scheme and the seed, so every edge computes the same partition on its own
and only keeps its shard, and the oracle computes it again.

Schemes (:func:`parse_scheme`):

``iid``
    A seeded permutation of all samples cut into E contiguous pieces whose sizes differ by at
    most one (``len(labels) // E`` or one more). Every sample is in exactly one shard.
``dirichlet:ALPHA``
    The usual label-skew split (Hsu et al. 2019, "Measuring the effects of non-identical data
    distribution"): for every class c, draw proportions ``p_c ~ Dirichlet(ALPHA, ..., ALPHA)``
    over the E edges and deal that class's (seeded, shuffled) samples out in those proportions
    (cumulative rounding, so the counts add up to the class size). Small ALPHA puts most of a
    class on few edges; large ALPHA tends to IID. Every sample is in exactly one shard. The
    whole draw is repeated (the generator goes on, so it stays deterministic) while some edge
    holds fewer than ``min_per_edge`` samples, at most :data:`MAX_DRAWS` times, then a
    :class:`~hierbench.errors.ConfigError` says to raise ALPHA or lower the number of edges.

Within a shard the indices are in increasing order (the dataset's order); the edge's batch
loader shuffles them per epoch. :func:`describe` gives the JSON-able record of a partition.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from hierbench.errors import ConfigError

__all__ = ["MAX_DRAWS", "Partition", "describe", "parse_scheme", "partition"]

#: How many Dirichlet draws :func:`partition` tries before it gives up on ``min_per_edge``.
MAX_DRAWS = 100


def parse_scheme(spec: str) -> tuple[str, float | None]:
    """``"iid"`` -> ``("iid", None)``; ``"dirichlet:0.5"`` -> ``("dirichlet", 0.5)``.

    Raises:
        ConfigError: anything else, or ALPHA not a finite number > 0.
    """
    if not isinstance(spec, str):
        raise ConfigError(f"partition must be a string (iid | dirichlet:ALPHA), got {spec!r}")
    if spec == "iid":
        return "iid", None
    name, sep, value = spec.partition(":")
    if name != "dirichlet" or not sep:
        raise ConfigError(f"unknown partition {spec!r}; valid: iid | dirichlet:ALPHA (ALPHA > 0)")
    try:
        alpha = float(value)
    except ValueError:
        raise ConfigError(f"partition {spec!r}: ALPHA {value!r} is not a number") from None
    if not 0.0 < alpha < float("inf"):
        raise ConfigError(f"partition {spec!r}: ALPHA must be a finite number > 0, got {alpha}")
    return "dirichlet", alpha


class Partition(list):
    """A list of E shards (each a sorted list of sample indices) with how it was made."""

    scheme: str
    alpha: float | None
    seed: int
    num_classes: int
    draws: int
    labels: list[int]


def partition(
    labels: Sequence[int],
    edges: int,
    scheme: str = "iid",
    *,
    seed: int = 0,
    num_classes: int | None = None,
    min_per_edge: int = 1,
) -> Partition:
    """Shard the samples with ``labels`` over ``edges`` edges (see the module docstring).

    Args:
        labels: one integer label per sample, in ``[0, num_classes)``.
        edges: the number of edges E (>= 1).
        scheme: ``iid`` or ``dirichlet:ALPHA``.
        seed: the seed of the permutation / the Dirichlet draw.
        num_classes: default ``max(labels) + 1``.
        min_per_edge: every shard must hold at least this many samples (for a batch of this
            size on every edge); IID checks it once, Dirichlet redraws (see above).

    Raises:
        ConfigError: ``edges < 1``, more edges (times ``min_per_edge``) than samples, a bad
            scheme or ALPHA, labels out of range, or no Dirichlet draw that gives every edge
            ``min_per_edge`` samples.
    """
    kind, alpha = parse_scheme(scheme)
    if isinstance(edges, bool) or not isinstance(edges, int) or edges < 1:
        raise ConfigError(f"the number of edges must be an integer >= 1, got {edges!r}")
    if isinstance(min_per_edge, bool) or not isinstance(min_per_edge, int) or min_per_edge < 1:
        raise ConfigError(f"min_per_edge must be an integer >= 1, got {min_per_edge!r}")
    labels = [int(v) for v in labels]
    n = len(labels)
    if n < edges * min_per_edge:
        raise ConfigError(
            f"{n} samples cannot give {edges} edges {min_per_edge} sample(s) each: use fewer "
            "edges, a smaller batch, or more data"
        )
    k = (max(labels) + 1) if num_classes is None else int(num_classes)
    if labels and (min(labels) < 0 or max(labels) >= k):
        raise ConfigError(f"labels must lie in [0, {k}), got [{min(labels)}, {max(labels)}]")
    rng = random.Random(f"hierbench-partition:{kind}:{seed}")
    draws = 1
    if kind == "iid":
        order = list(range(n))
        rng.shuffle(order)
        base, extra = divmod(n, edges)
        shards, start = [], 0
        for e in range(edges):
            size = base + (1 if e < extra else 0)
            shards.append(sorted(order[start : start + size]))
            start += size
    else:
        by_class: list[list[int]] = [[] for _ in range(k)]
        for i, c in enumerate(labels):
            by_class[c].append(i)
        while True:
            shards = [[] for _ in range(edges)]
            for members in by_class:
                members = list(members)
                rng.shuffle(members)
                weights = [rng.gammavariate(alpha, 1.0) for _ in range(edges)]
                total = sum(weights)
                if total <= 0.0:  # every gamma draw underflowed (tiny alpha): one edge takes it
                    pick = rng.randrange(edges)
                    weights = [1.0 if e == pick else 0.0 for e in range(edges)]
                    total = 1.0
                acc, cut_prev = 0.0, 0
                for e in range(edges):
                    acc += weights[e]
                    cut = len(members) if e == edges - 1 else round(len(members) * acc / total)
                    cut = min(max(cut, cut_prev), len(members))
                    shards[e].extend(members[cut_prev:cut])
                    cut_prev = cut
            if min(len(s) for s in shards) >= min_per_edge:
                break
            if draws >= MAX_DRAWS:
                raise ConfigError(
                    f"dirichlet:{alpha:g} over {edges} edges: no draw in {MAX_DRAWS} gave every "
                    f"edge {min_per_edge} samples ({n} in all); raise ALPHA, use fewer edges or "
                    "a smaller batch"
                )
            draws += 1
        shards = [sorted(s) for s in shards]
    out = Partition(shards)
    out.scheme, out.alpha, out.seed, out.num_classes, out.draws = kind, alpha, seed, k, draws
    out.labels = labels
    return out


def describe(parts: Partition) -> dict:
    """The JSON-able record of a partition: scheme, alpha, seed, per-edge sizes and class
    counts, and a skew summary (the largest class share per edge)."""
    labels = parts.labels
    counts = []
    for shard in parts:
        c = [0] * parts.num_classes
        for i in shard:
            c[labels[i]] += 1
        counts.append(c)
    return {
        "scheme": parts.scheme if parts.alpha is None else f"{parts.scheme}:{parts.alpha:g}",
        "alpha": parts.alpha,
        "seed": parts.seed,
        "edges": len(parts),
        "samples": sum(len(s) for s in parts),
        "draws": parts.draws,
        "sizes": [len(s) for s in parts],
        "class_counts": counts,
        "max_class_share": [max(c) / max(sum(c), 1) for c in counts],
    }
