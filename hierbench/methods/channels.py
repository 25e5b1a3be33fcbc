"""Channels between roles, over the transfer engine (:mod:`hierbench.transfer`).

A role needs two ordered, reliable channels: ``data`` through the emulated link (uploads; split
learning's gradients come back on it at the downlink rate) and ``control``, unshaped (config,
evaluation, results). In one process they are the engine's in-process pairs; across processes,
two authenticated TCP connections, the data one first.
"""

from __future__ import annotations

import dataclasses

from hierbench import transfer
from hierbench.methods.config import RunConfig


class EngineChannel:
    """The role-side view of one engine endpoint: bytes in, bytes out, in order."""

    def __init__(self, endpoint: transfer.Endpoint) -> None:
        self.endpoint = endpoint

    def send(self, data: bytes, timeout: float | None = None) -> None:
        self.endpoint.send(data, timeout=timeout)

    def recv(self, timeout: float | None = None) -> bytes:
        return self.endpoint.recv(timeout=timeout).data

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued (for up to ``timeout`` seconds; None: all), then close."""
        self.endpoint.close(timeout=timeout)

    def limit(self, nbytes: int) -> None:
        """Refuse any later message over ``nbytes`` (:func:`receive_limits`)."""
        self.endpoint.set_recv_limit(nbytes)


#: Messages the cloud's control channel takes besides evaluation batches (hello, eval requests,
#: done): small JSON.
CONTROL_SLACK = 1 << 20
#: Images per evaluation batch (``EdgeRole._evaluate``).
EVAL_BATCH = 256


def receive_limits(cfg: RunConfig, cut_shape: tuple[int, ...]) -> dict[str, int]:
    """The largest message the cloud can legitimately receive, per channel, from the run config
    (not the engine's 1 GiB default): ``data`` (one training batch: raw uint8 images for
    cloud_only, else an encoded activation of ``(batch, *cut_shape)``) and ``control``
    (an evaluation batch of up to :data:`EVAL_BATCH` images, and small JSON), and ``codec``: the
    activation codec's ``max_frame_size`` (a decoded activation never exceeds it).

    Encoded frames are bounded by their fp32 size (no codec stores more than 4 bytes a value)
    plus zstd's worst-case expansion (n/128 + 64 KiB: over ``ZSTD_compressBound``), the frame
    header (< 1 KiB) and a role message's header and labels."""
    from math import prod

    from hierbench.methods import messages

    def message(batch: int) -> int:
        if cfg.method == "cloud_only":
            body = batch * 3 * cfg.input_size * cfg.input_size
        else:
            body = batch * prod(cut_shape) * 4
        return messages.HEADER_BYTES + batch * 8 + body + body // 128 + (64 << 10) + 1024

    big = max(cfg.batch_size, EVAL_BATCH)
    codec = max(cfg.batch_size, EVAL_BATCH) * max(prod(cut_shape), 1) * 4
    return {
        "data": message(cfg.batch_size),
        "control": message(big) + CONTROL_SLACK,
        "codec": codec + codec // 128 + (64 << 10) + 1024,
    }


def make_link(cfg: RunConfig) -> transfer.Link:
    """The data channel's link: ``cfg.link`` (preset or rate spec) with ``cfg.outages``."""
    link = transfer.Link() if cfg.link is None else transfer.Link.parse(cfg.link)
    if cfg.outages:
        link = dataclasses.replace(link, outages=cfg.outages)
    return link


def inprocess_channels(cfg: RunConfig):
    """((edge_data, cloud_data), (edge_control, cloud_control)) joined in this process."""
    a, b = transfer.inprocess_pair(make_link(cfg), slots=cfg.slots)
    c, d = transfer.inprocess_pair(None, slots=64)
    return (EngineChannel(a), EngineChannel(b)), (EngineChannel(c), EngineChannel(d))


def link_records(channel) -> dict | None:
    """The data channel's link and per-message engine timelines (seconds, engine clock).

    ``epoch`` is when the endpoint was created: outages are relative to it.
    """
    endpoint = getattr(channel, "endpoint", None)
    if endpoint is None:
        return None
    out = []
    for r in endpoint.records():
        out.append(
            {
                "direction": r.direction,
                "seq": r.seq,
                "bytes": r.nbytes,
                "enqueued": r.enqueued,
                "tx_start": r.tx_start,
                "tx_end": r.tx_end,
                "delivered": r.delivered,
                "taken": r.taken,
            }
        )
    return {"spec": str(endpoint.link), "epoch": endpoint.epoch, "messages": out}
