"""What fleet roles say to each other, and the data each edge holds.

One authenticated TCP connection per edge (the transfer engine: CRC-checked frames, the shared
secret proven both ways), shaped by the edge's link. On it, all as
:class:`~hierbench.methods.messages.RoleMessage` s (nothing unpickled, every field validated):

==========  ==========  ==================================================================
direction   kind        what
==========  ==========  ==================================================================
up          CONTROL     ``hello``: edge id, the :class:`FleetConfig` (as JSON), steps per epoch
down        CONTROL     ``welcome`` (or ``welcome`` with ``error``: the worker refuses the edge)
up          ACT / RAW   step s: encoded cut activations + labels (hierarchical) or the raw
                        uint8 batch + labels (cloud_only)
up          PARAMS      after a sync step s (``fedavg:K``): the edge's flat fp32 state (edge
                        layers + exit head: parameters, then floating buffers), an fp32 codec
                        frame (lossless)
down        PARAMS      the average over all E edges, same layout
up          END         no more steps
==========  ==========  ==================================================================
"""

from __future__ import annotations

import time

import torch

from hierbench import data as hdata
from hierbench import transfer
from hierbench.codec import ActivationCodec
from hierbench.errors import ConfigError, ProtocolError, TransferError
from hierbench.fleet.config import FleetConfig, edge_seed
from hierbench.fleet.partition import Partition, partition
from hierbench.methods import messages
from hierbench.methods.channels import EngineChannel
from hierbench.methods.messages import Kind, RoleMessage

__all__ = [
    "Conn",
    "edge_loader",
    "flat_state",
    "load_flat_state",
    "pack_params",
    "shards",
    "unpack_params",
]

_PARAMS_CODEC = ActivationCodec("fp32")


class Conn(EngineChannel):
    """One engine endpoint as a fleet role sees it: :class:`EngineChannel` (bytes in, bytes
    out, in order) plus role messages and control JSON."""

    def recv_msg(self, timeout: float | None = None) -> RoleMessage:
        return messages.unpack(self.recv(timeout))

    def recv_json(self, timeout: float | None = None) -> dict:
        msg = self.recv_msg(timeout)
        if msg.kind != Kind.CONTROL:
            raise ProtocolError(f"expected a control message, got {msg.kind.name}")
        return messages.unpack_json(msg.payload)


def connect_retry(
    host: str, port: int, secret: bytes, *, link, slots: int, timeout: float, ingress=None
):
    """Connect to a worker, retrying while it is not listening yet (up to ``timeout`` s);
    ``ingress``: the shared :class:`~hierbench.transfer.Ingress` the uplink also draws from."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return Conn(
                transfer.connect(
                    host, port, secret, link=link, slots=slots, timeout=5.0, ingress=ingress
                )
            )
        except (TransferError, OSError) as exc:
            if time.monotonic() > deadline:
                raise TransferError(
                    f"no cloud worker at {host}:{port} within {timeout:.0f} s: {exc}"
                ) from exc
            time.sleep(0.2)


# -- the data each edge holds ----------------------------------------------------------------


def shards(fcfg: FleetConfig):
    """(training set, partition, steps per epoch) of a fleet run: every edge computes the same.

    Steps per epoch: the smallest shard's full batches (``min_i len(shard_i) // B``), capped by
    ``run.batches_per_epoch``: a lockstep cloud step needs one batch from every edge, so an edge
    with a larger shard sees a fresh random ``spe * B`` of it each epoch.
    """
    cfg = fcfg.run
    train = hdata.load_dataset(
        cfg.dataset, "train", cfg.data_root, limit_per_class=cfg.limit_per_class
    )
    parts: Partition = partition(
        train.labels.tolist(),
        fcfg.edges,
        fcfg.partition,
        seed=cfg.seed,
        num_classes=train.num_classes,
        min_per_edge=cfg.batch_size,
    )
    spe = min(len(s) for s in parts) // cfg.batch_size
    if cfg.batches_per_epoch is not None:
        spe = min(spe, cfg.batches_per_epoch)
    if spe < 1:  # pragma: no cover - min_per_edge guarantees a batch
        raise ConfigError("some edge's shard holds no full batch")
    return train, parts, spe


def edge_loader(fcfg: FleetConfig, train, parts: Partition, edge: int) -> hdata.BatchLoader:
    """Edge ``edge``'s batches: its shard, shuffled and augmented per epoch with its own seed."""
    cfg = fcfg.run
    return hdata.BatchLoader(
        train.subset(parts[edge]),
        cfg.batch_size,
        shuffle=True,
        augment=cfg.augment,
        seed=edge_seed(cfg.seed, edge),
        drop_last=True,
    )


# -- edge model state (FedAvg) -----------------------------------------------------------------


def state_tensors(*modules) -> list[torch.Tensor]:
    """What FedAvg averages, in a fixed order: every parameter, then every floating-point buffer
    (BatchNorm running statistics) of ``modules``. Integer buffers (``num_batches_tracked``,
    equal on every edge) and optimizer state (momentum) stay local."""
    out = []
    for m in modules:
        if m is not None:
            out += list(m.parameters())
    for m in modules:
        if m is not None:
            out += [b for b in m.buffers() if b.is_floating_point()]
    return out


def flat_state(*modules) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).float() for t in state_tensors(*modules)])


@torch.no_grad()
def load_flat_state(flat: torch.Tensor, *modules) -> None:
    tensors = state_tensors(*modules)
    n = sum(t.numel() for t in tensors)
    if flat.dim() != 1 or flat.numel() != n:
        raise ProtocolError(f"parameters: {tuple(flat.shape)} values, the edge model has {n}")
    i = 0
    for t in tensors:
        t.copy_(flat[i : i + t.numel()].view_as(t))
        i += t.numel()


def pack_params(step: int, flat: torch.Tensor) -> bytes:
    frame = _PARAMS_CODEC.encode(flat.contiguous())
    return messages.pack(RoleMessage(Kind.PARAMS, step, 0, None, frame))


def unpack_params(msg: RoleMessage, step: int, numel: int) -> torch.Tensor:
    if msg.kind != Kind.PARAMS or msg.step != step:
        raise ProtocolError(
            f"expected the parameters of step {step}, got {msg.kind.name} of step {msg.step}"
        )
    flat = _PARAMS_CODEC.decode(msg.payload)
    if flat.dim() != 1 or flat.numel() != numel or flat.dtype != torch.float32:
        raise ProtocolError(
            f"parameters of step {step}: {flat.dtype} {tuple(flat.shape)}, expected {numel} fp32"
        )
    return flat
