"""A fleet run's settings: the per-edge :class:`~hierbench.methods.RunConfig` plus the topology.

Every role (each edge, each cloud worker) gets the same :class:`FleetConfig`; an edge's hello
carries it and a worker refuses an edge whose config differs. The definitions here are shared by
the roles and by the oracle (:mod:`hierbench.fleet.oracle`) because they *define* the run, as
``RunConfig`` does for one edge: which worker serves which edge, each edge's data-order seed,
each upload's codec seed, and when edge models are averaged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hierbench.errors import ConfigError
from hierbench.fleet.partition import parse_scheme
from hierbench.methods.config import RunConfig
from hierbench.spec.sync import parse_edge_sync

__all__ = [
    "FLEET_METHODS",
    "POLICIES",
    "FleetConfig",
    "check_nodes",
    "codec_seed",
    "edge_seed",
    "node_of",
    "parse_address",
    "parse_edge_sync",
    "parse_nodes",
    "worker_address",
]

#: Methods a fleet runs. Split learning: each edge waits for its gradient every step (the
#: SplitFed convention: the gradient of the edge's own mean loss, see :mod:`~.cloud`).
FLEET_METHODS = ("hierarchical", "split", "cloud_only")

#: Cloud step policies (``FleetConfig.policy``, recorded in every fleet record).
POLICIES = {
    "lockstep": (
        "cloud step s consumes exactly the message of step s from every edge its worker serves, "
        "concatenated in edge-id order; the W workers' gradients are all-reduced (DDP) with the "
        "loss scaled so that the update is the gradient of the mean loss over all E x B samples "
        "of step s; an edge that drops stalls the cloud until it rejoins (rejoin_timeout)"
    ),
    "present": (
        "cloud step s consumes the next message of every served edge that is connected, "
        "concatenated in edge-id order; an edge that drops is skipped (the cloud trains on the "
        "others) until it rejoins with --resume and resends or recomputes the steps the cloud "
        "has not consumed, or is given up after rejoin_timeout; the update is the gradient of "
        "the mean loss over the samples present at step s, and the cloud's learning-rate "
        "schedule advances by the samples trained on (a step with fewer edges advances it less); "
        "each step records which edge steps it consumed"
    ),
}


def edge_seed(seed: int, edge: int) -> int:
    """The data-order (shuffle and augmentation) seed of edge ``edge``: distinct per edge, so
    that edges with the same shard sizes do not visit them in lockstep order."""
    return seed * 1_000_003 + 7919 * (edge + 1)


def codec_seed(step: int, edge: int, edges: int) -> int:
    """The codec seed of edge ``edge``'s upload of step ``step`` (used by stochastic rounding):
    one per (step, edge)."""
    return step * edges + edge


def parse_address(spec: str, what: str = "address") -> tuple[str, int]:
    """``HOST:PORT`` -> ``(host, port)`` (an empty host is ``127.0.0.1``; IPv6: ``[::1]:PORT``).

    Raises:
        ConfigError: no ``:PORT``, or PORT not an integer in 0..65535 (``what`` names the input).
    """
    host, sep, port = str(spec).strip().rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{what} {spec!r}: expected HOST:PORT with a port in 0..65535")
    return host or "127.0.0.1", int(port)


def check_nodes(workers: int, nnodes: int, node_rank: int) -> None:
    """Whether a cloud of ``workers`` workers can run on ``nnodes`` machines, this one being
    node ``node_rank``: each node runs ``workers // nnodes`` of them (:func:`node_of`).

    Raises:
        ConfigError: ``nnodes`` not an integer >= 1 that divides ``workers``, or ``node_rank``
            not in ``[0, nnodes)``.
    """
    if isinstance(nnodes, bool) or not isinstance(nnodes, int) or nnodes < 1:
        raise ConfigError(f"nnodes must be an integer >= 1, got {nnodes!r}")
    if workers % nnodes:
        raise ConfigError(
            f"{workers} cloud workers on {nnodes} nodes: every node runs W / N workers, so the "
            f"number of nodes must divide W"
        )
    if isinstance(node_rank, bool) or not isinstance(node_rank, int):
        raise ConfigError(f"node_rank must be an integer, got {node_rank!r}")
    if not 0 <= node_rank < nnodes:
        raise ConfigError(f"node_rank {node_rank} is not in [0, {nnodes}) ({nnodes} nodes)")


def node_of(worker: int, workers: int, nnodes: int) -> int:
    """The node that runs worker (global rank) ``worker``: node n runs the W / N workers
    ``n * W / N ...  (n + 1) * W / N - 1`` (torch's static rendezvous ranks them so)."""
    return worker // (workers // nnodes)


def parse_nodes(spec: str, workers: int) -> list[tuple[str, int]]:
    """An edge's ``--connect``: one ``HOST:PORT`` per cloud node, comma-separated, in node-rank
    order (each node's ``--listen``; one address: a cloud on one machine).

    Raises:
        ConfigError: an entry that is not HOST:PORT, a port of 0 (a connect address needs the
            port the cloud listens on), or a number of nodes that does not divide W.
    """
    entries = str(spec).split(",")
    nodes = [parse_address(e, f"--connect entry {k}") for k, e in enumerate(entries)]
    for k, (_, port) in enumerate(nodes):
        if port == 0:
            raise ConfigError(
                f"--connect entry {k} ({entries[k]!r}): port 0; give the port of the cloud "
                "node's --listen"
            )
    if workers % len(nodes):
        raise ConfigError(
            f"--connect lists {len(nodes)} cloud nodes (one HOST:PORT per node) for {workers} "
            "workers: the number of nodes must divide W"
        )
    return nodes


def worker_address(nodes: list[tuple[str, int]], workers: int, worker: int) -> tuple[str, int]:
    """Where worker ``worker`` listens: on its node's host (:func:`node_of`), at that node's
    port + ``worker`` (every worker listens on ``PORT + w``, w its global rank)."""
    host, port = nodes[node_of(worker, workers, len(nodes))]
    return host, port + worker


@dataclass(frozen=True)
class FleetConfig:
    """E edges feeding one cloud of W data-parallel workers.

    Attributes:
        run: what each edge runs (model, cut, codec, link, batch size per edge, schedule, seed).
            ``batch_size`` is per edge: a cloud step trains on ``edges * batch_size`` samples.
        edges: E >= 1.
        workers: W, 1 <= W <= E. Worker w serves the edges ``{i : i % W == w}``; when W does not
            divide E the workers serve ``ceil(E/W)`` or ``floor(E/W)`` edges and the loss
            scaling keeps the update exact (see :data:`POLICIES`).
        edge_sync: ``none`` (independent edge models: the paper's method per device) or
            ``fedavg:K`` (edge layers + exit head averaged across all edges through the cloud
            after every K-th step).
        partition: ``iid`` or ``dirichlet:ALPHA`` (:mod:`hierbench.fleet.partition`), drawn
            with ``run.seed``.
        policy: the cloud step policy (:data:`POLICIES`): ``lockstep`` (the default) or
            ``present`` (the cloud trains on the edges that are connected).
        rejoin_timeout: seconds a cloud worker waits for an edge that dropped (its connection
            failed: the process died, the link broke) to come back with ``--resume``; the other
            edges keep computing and uploading meanwhile. ``lockstep``: the step waits, into
            the others' bounded backlogs (the run's math stays the uninterrupted run's), and an
            edge that drops stops the cloud when this is 0 (the default). ``present``: the
            cloud trains on the others meanwhile, and an edge away longer (at once when 0) is
            given up: the run finishes without its remaining steps, recorded in the worker's
            ``lost``. The edge side: ``run.checkpoint_every = N``
            makes each edge checkpoint every N steps and after every FedAvg sync (protocol:
            :mod:`hierbench.fleet.edge`); required with ``fedavg:K`` when rejoining is on.
        ingress: the shared cloud ingress, a rate (``"20mbit"``), or None: one token bucket
            (:class:`hierbench.transfer.Ingress`) that every edge's uplink draws from besides its
            own link (a cell tower, a datacentre link). The bucket lives in a file that the
            edges share (``--ingress-file``; a local run: ``<run_dir>/ingress.bucket``), so the
            edges that share it run on one machine; edges on other machines have the real
            network between them and the cloud as their ingress.
    """

    run: RunConfig
    edges: int = 2
    workers: int = 1
    edge_sync: str = "none"
    partition: str = "iid"
    policy: str = "lockstep"
    rejoin_timeout: float = 0.0
    ingress: str | None = None

    def __post_init__(self) -> None:
        for name in ("edges", "workers"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
        if self.workers > self.edges:
            raise ConfigError(
                f"{self.workers} cloud workers for {self.edges} edges: every worker serves at "
                f"least one edge (worker w serves edges i with i % W == w), so W <= E"
            )
        parse_edge_sync(self.edge_sync)
        parse_scheme(self.partition)
        if self.ingress is not None:
            from hierbench.spec.links import parse_rate

            if not isinstance(self.ingress, str):
                raise ConfigError(
                    f"ingress must be a rate string such as '20mbit', got {self.ingress!r}"
                )
            try:
                rate = parse_rate(self.ingress)
            except ConfigError as exc:
                raise ConfigError(
                    f"ingress {self.ingress!r} is not a rate such as '20mbit' ({exc})"
                ) from None
            if not 0 < rate < float("inf"):
                raise ConfigError(f"ingress {self.ingress!r}: the rate must be finite and > 0")
        if self.policy not in POLICIES:
            raise ConfigError(f"unknown policy {self.policy!r}; valid: {', '.join(POLICIES)}")
        run = self.run
        if self.policy == "present" and (self.sync_every or run.method == "split"):
            raise ConfigError(
                "policy 'present' runs hierarchical or cloud-only fleets with independent edge "
                f"models (edge_sync none), not method {run.method!r} with edge_sync "
                f"{self.edge_sync!r}: a FedAvg sync or a split step needs every edge"
            )
        if run.method not in FLEET_METHODS:
            raise ConfigError(f"a fleet runs {' | '.join(FLEET_METHODS)}, not {run.method!r}")
        if self.sync_every and run.method == "cloud_only":
            raise ConfigError(
                f"edge_sync {self.edge_sync!r} averages edge models; {run.method} has none"
            )
        rt = self.rejoin_timeout
        if isinstance(rt, bool) or not isinstance(rt, int | float) or not rt >= 0:
            raise ConfigError(f"rejoin_timeout must be a number of seconds >= 0, got {rt!r}")
        if rt and self.sync_every and not run.checkpoint_every:
            raise ConfigError(
                f"rejoin_timeout with edge_sync {self.edge_sync!r} needs checkpoint_every >= 1: "
                "a rejoining edge replays from its checkpoint, and the cloud keeps only the last "
                "FedAvg average (edges checkpoint after every sync)"
            )
        if run.outages or run.val_holdout or run.eval not in ("none", "end"):
            raise ConfigError(
                "a fleet run does not yet support outages, val_holdout or per-epoch evaluation "
                "(eval must be 'none' or 'end': the saved models on the test split after the "
                "run, hierbench.fleet.evaluate)"
            )

    @property
    def sync_every(self) -> int:
        """K of ``fedavg:K``, 0 for independent edge models."""
        return parse_edge_sync(self.edge_sync)

    def served(self, worker: int) -> list[int]:
        """The edges worker ``worker`` serves, in edge-id order."""
        return list(range(worker, self.edges, self.workers))

    def worker_of(self, edge: int) -> int:
        return edge % self.workers

    def syncs_after(self, step: int) -> bool:
        """Whether edge models are averaged after (0-based) step ``step``."""
        k = self.sync_every
        return bool(k) and (step + 1) % k == 0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["run"] = self.run.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FleetConfig:
        if not isinstance(d, dict) or not isinstance(d.get("run"), dict):
            raise ConfigError("a fleet config is an object with a 'run' object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"unknown fleet settings {unknown}; valid: {', '.join(sorted(known))}"
            )
        return cls(**{**d, "run": RunConfig.from_dict(d["run"])})
