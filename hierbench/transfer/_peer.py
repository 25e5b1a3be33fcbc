"""A transfer endpoint as a process, for two-process runs (loopback tests, netns validation).

    python -m hierbench.transfer._peer listen --host 127.0.0.1 --port 0 [--echo] [--link SPEC]
    python -m hierbench.transfer._peer send --host H --port P --count N --bytes N [--echo]

The shared secret comes from $HIERBENCH_TRANSFER_SECRET (never the command line). ``listen``
prints ``{"event": "listening", "port": P}`` first; both print one JSON report at the end:
which messages arrived intact and in order, the records and the stats. Message ``seq`` carries
``payload(seq, n)``, so the receiver can check every byte.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import sys
import time

from hierbench.errors import TransferClosed
from hierbench.transfer.endpoint import connect, listen
from hierbench.transfer.link import Link

SECRET_ENV = "HIERBENCH_TRANSFER_SECRET"


def payload(seq: int, nbytes: int) -> bytes:
    return random.Random(seq).randbytes(nbytes)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def emit(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _options(args) -> dict:
    return {
        "slots": args.slots,
        "recv_slots": args.recv_slots,
        "sndbuf": args.sndbuf,
        "rcvbuf": args.rcvbuf,
        "linger": 5.0,
    }


def _report(ep, role: str, checks: list, started: float) -> dict:
    st = ep.stats()
    return {
        "event": "done",
        "role": role,
        "checks": checks,
        "stats": {
            **dataclasses.asdict(st),
            "goodput_bps": st.goodput_bps,
            "recv_goodput_bps": st.recv_goodput_bps,
        },
        "records": [dataclasses.asdict(r) for r in ep.records()],
        "wall_s": time.perf_counter() - started,
    }


def _link(args) -> Link:
    return dataclasses.replace(Link.parse(args.link), burst_bytes=args.burst)


def run_listen(args) -> None:
    secret = os.environ[SECRET_ENV]
    with listen(args.host, args.port, secret, link=_link(args), **_options(args)) as lst:
        emit({"event": "listening", "port": lst.port})
        ep = lst.accept(timeout=args.timeout)
    started = time.perf_counter()
    checks = []
    with ep:
        expect = 0
        while True:
            try:
                m = ep.recv(timeout=args.timeout)
            except TransferClosed:
                break
            ok = m.seq == expect and m.data == payload(m.seq, m.nbytes)
            checks.append([m.seq, m.nbytes, ok])
            expect += 1
            if args.echo:
                ep.send(m.data, timeout=args.timeout)
        report = _report(ep, "listen", checks, started)
    emit(report)


def run_send(args) -> None:
    secret = os.environ[SECRET_ENV]
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [args.bytes] * args.count
    ep = connect(
        args.host, args.port, secret, link=_link(args), timeout=args.timeout, **_options(args)
    )
    started = time.perf_counter()
    checks = []
    with ep:
        for seq, n in enumerate(sizes):
            ep.send(payload(seq, n), timeout=args.timeout)
            if seq == 0:
                emit({"event": "sending"})
            if args.echo:
                m = ep.recv(timeout=args.timeout)
                checks.append([m.seq, m.nbytes, m.seq == seq and m.data == payload(seq, n)])
        ep.flush(timeout=args.timeout)
        report = _report(ep, "send", checks, started)
    emit(report)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m hierbench.transfer._peer")
    p.add_argument("role", choices=["listen", "send"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--link", default="inf", help="link spec, e.g. 20mbit/5ms (sending side)")
    p.add_argument("--burst", type=int, default=0, help="token-bucket depth, bytes")
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--bytes", type=int, default=100_000)
    p.add_argument("--sizes", default="", help="comma-separated message sizes (overrides)")
    p.add_argument("--echo", action="store_true", help="the listener sends every message back")
    p.add_argument("--slots", type=int, default=2)
    p.add_argument("--recv-slots", type=int, default=4)
    p.add_argument("--sndbuf", type=int, default=0)
    p.add_argument("--rcvbuf", type=int, default=0)
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args(argv)
    (run_listen if args.role == "listen" else run_send)(args)


if __name__ == "__main__":
    main()
