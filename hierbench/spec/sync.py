"""The one grammar of a fleet's edge-model synchronisation, ``FleetConfig.edge_sync``: torch-free
so that the runtime model (which reads fleet records) parses it as the fleet roles do."""

from __future__ import annotations

from hierbench.errors import ConfigError

__all__ = ["parse_edge_sync"]


def parse_edge_sync(spec: str) -> int:
    """``"none"`` -> 0; ``"fedavg:K"`` -> K (average edge models every K steps).

    Raises:
        ConfigError: anything else, or K not an integer >= 1.
    """
    if spec == "none":
        return 0
    name, sep, value = str(spec).partition(":")
    if name != "fedavg" or not sep:
        raise ConfigError(f"unknown edge_sync {spec!r}; valid: none | fedavg:K (K >= 1 steps)")
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"edge_sync {spec!r}: K must be an integer >= 1, got {value!r}")
    return int(value)
