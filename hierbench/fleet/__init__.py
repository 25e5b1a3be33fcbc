"""hierbench.fleet: many edges feeding one cloud that scales out on ``torch.distributed``.

E edge processes (each its own data shard, edge layers and exit head) stream to a cloud job of W
worker processes that train one cloud model with ``DistributedDataParallel`` (gloo on CPUs,
NCCL with a GPU per worker), launched by torch's elastic launcher. Modules:

- :mod:`~hierbench.fleet.partition`: IID / Dirichlet(alpha) shards (standard library only);
- :mod:`~hierbench.fleet.config`: :class:`FleetConfig` (topology, edge sync, partition, policy);
- :mod:`~hierbench.fleet.wire`: the messages, each edge's data, edge-model state for FedAvg;
- :mod:`~hierbench.fleet.cloud`: :func:`launch_cloud` (the W workers under torch's elastic
  launcher); :mod:`~hierbench.fleet.worker`: one worker (the exact math is in its docstring);
  :mod:`~hierbench.fleet.edge`: one edge;
- :mod:`~hierbench.fleet.launcher`: :func:`run_fleet`, a local run; :mod:`~hierbench.fleet.record`:
  the fleet run record; :mod:`~hierbench.fleet.oracle`: the same math as one plain loop.
"""

from __future__ import annotations

import importlib

__all__ = ["FleetConfig", "describe", "parse_edge_sync", "parse_scheme"]

# Names are imported when first used, so that ``hierbench.fleet.partition`` (standard library
# only) imports without torch.
_WHERE = {
    "FleetConfig": "config",
    "parse_edge_sync": "config",
    "describe": "partition",
    "parse_scheme": "partition",
}  # the function partition() is hierbench.fleet.partition.partition (the module has the name)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"hierbench.fleet.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'hierbench.fleet' has no attribute {name!r}")
