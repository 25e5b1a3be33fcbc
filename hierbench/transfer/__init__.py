"""hierbench.transfer: the edge-cloud channel (facade over the native transfer engine).

A :class:`Link` describes the emulated link (rates, latency, jitter, outages; presets ``3g``,
``4g``, ``wifi``, ``lan``); endpoints move messages over it, through an in-process pair or TCP::

    a, b = inprocess_pair(Link.preset("3g"))          # a: edge (sends up), b: cloud
    with listen(port=0, secret=key) as lst: ...       # cloud: lst.accept() -> Endpoint
    ep = connect(host, port, key, link="4g")          # edge
    ep = connect(host, port, key, link="4g", ingress=Ingress("20mbit", path="/dev/shm/tower"))
    ep.send(tensor_or_bytes); msg = ep.recv(); ep.records(); ep.stats(); ep.close()

Pass ``clock=VirtualClock()`` to :func:`inprocess_pair` to run in virtual time (tests).
The engine itself is C++ (csrc/transfer/, see docs/transfer.md).

Allowed imports: ``hierbench._ext``, ``hierbench.errors`` (torch only for tensor messages).
"""

from __future__ import annotations

from hierbench.errors import TransferClosed, TransferError, TransferTimeout
from hierbench.transfer.clock import VirtualClock
from hierbench.transfer.endpoint import (
    MIN_SECRET_BYTES,
    Endpoint,
    Listener,
    connect,
    inprocess_pair,
    listen,
)
from hierbench.transfer.ingress import Ingress
from hierbench.transfer.link import PRESETS, Link
from hierbench.transfer.messages import Message, Record, SendSlot, Stats

__all__ = [
    "MIN_SECRET_BYTES",
    "PRESETS",
    "Endpoint",
    "Ingress",
    "Link",
    "Listener",
    "Message",
    "Record",
    "SendSlot",
    "Stats",
    "TransferClosed",
    "TransferError",
    "TransferTimeout",
    "VirtualClock",
    "connect",
    "inprocess_pair",
    "listen",
]
