"""Kernel-shaped validation: the TCP transport through a real, tc-shaped link.

Two network namespaces joined by a veth pair; the sending side's veth gets a ``tc tbf`` token
bucket (this project's kernels have no netem, so there is no kernel-side latency). One endpoint
process runs in each namespace (``ip netns exec``). The same transfer is run twice:

* ``emulator``: unshaped veth, the engine's token bucket paces at ``rate`` / ``burst``;
* ``tc``: the engine does not pace, the kernel's tbf does;

and the receiver's goodput and first-message latency are compared. Needs root, ``ip`` and
``tc``; everything is removed afterwards (also on errors). Namespace names carry the creating
pid, so leftovers of a killed run are recognised and removed by the next one.

    sudo python -m hierbench.transfer.netns --rate 20mbit --bytes 250000 --count 8
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from hierbench.errors import NetnsUnavailable, ProcessError
from hierbench.transfer._peer import SECRET_ENV
from hierbench.transfer.link import Link

_PREFIX = "hbxfer"
_REPO = Path(__file__).resolve().parents[2]


def unavailable_reason() -> str | None:
    """None if the kernel-shaped mode can run here, else the reason."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces and tc need root (run as root or with sudo)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` (iproute2) is not installed"
    return None


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise NetnsUnavailable(f"`{' '.join(cmd)}` failed: {out.stderr.strip() or out.stdout}")
    return out


def cleanup_stale() -> list[str]:
    """Removes namespaces left by runs whose process no longer exists; returns their names."""
    out = _run("ip", "netns", "list", check=False).stdout
    removed = []
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(rf"{_PREFIX}-(\d+)-[0-9a-f]+-[ab]", name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            _run("ip", "netns", "del", name, check=False)
            removed.append(name)
    return removed


@dataclass
class VethPair:
    ns_a: str  # sender side
    ns_b: str  # receiver side
    dev_a: str
    dev_b: str
    addr_a: str
    addr_b: str

    def exec_prefix(self, side: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns_a if side == "a" else self.ns_b]

    def shape(
        self, rate_bps: float, burst_bytes: int, queue_s: float = 0.2, side: str = "a"
    ) -> None:
        """tc tbf on one side's egress (``a``: a -> b, the default; ``b``: b -> a)."""
        tbf = f"rate {int(rate_bps)}bit burst {int(burst_bytes)} latency {int(queue_s * 1e3)}ms"
        dev = self.dev_a if side == "a" else self.dev_b
        _run(*self.exec_prefix(side), *f"tc qdisc replace dev {dev} root tbf {tbf}".split())

    def unshape(self) -> None:
        _run(*self.exec_prefix("a"), "tc", "qdisc", "del", "dev", self.dev_a, "root", check=False)

    def qdisc(self) -> str:
        return _run(*self.exec_prefix("a"), "tc", "qdisc", "show", "dev", self.dev_a).stdout


@contextlib.contextmanager
def veth_pair() -> Iterator[VethPair]:
    """Two fresh namespaces joined by a veth pair (10.231.x.1 <-> 10.231.x.2); always removed."""
    reason = unavailable_reason()
    if reason:
        raise NetnsUnavailable(reason)
    cleanup_stale()
    tag = secrets.token_hex(3)
    ns_a, ns_b = f"{_PREFIX}-{os.getpid()}-{tag}-a", f"{_PREFIX}-{os.getpid()}-{tag}-b"
    dev_a, dev_b = f"hb{tag}a", f"hb{tag}b"  # interface names: at most 15 characters
    subnet = f"10.231.{int(tag[:2], 16)}"
    pair = VethPair(ns_a, ns_b, dev_a, dev_b, f"{subnet}.1", f"{subnet}.2")
    try:
        _run("ip", "netns", "add", ns_a)
        _run("ip", "netns", "add", ns_b)
        _run(*f"ip link add {dev_a} netns {ns_a} type veth peer name {dev_b} netns {ns_b}".split())
        for ns, dev, addr in ((ns_a, dev_a, pair.addr_a), (ns_b, dev_b, pair.addr_b)):
            _run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        yield pair
    finally:
        for ns in (ns_a, ns_b):  # deleting a namespace deletes its end of the veth pair
            _run("ip", "netns", "del", ns, check=False)
        _run("ip", "link", "del", dev_a, check=False)  # if it never left the root namespace


def _peer_env(secret: str) -> dict[str, str]:
    env = dict(os.environ)
    env[SECRET_ENV] = secret
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO), env.get("PYTHONPATH", "")) if p)
    return env


def run_pair(
    *,
    listen_host: str = "127.0.0.1",
    connect_host: str = "127.0.0.1",
    listen_prefix: Sequence[str] = (),
    send_prefix: Sequence[str] = (),
    send_link: str = "inf",
    send_burst: int = 0,
    listen_link: str = "inf",
    count: int = 8,
    nbytes: int = 100_000,
    sizes: Sequence[int] = (),
    echo: bool = False,
    sndbuf: int = 0,
    rcvbuf: int = 0,
    timeout: float = 60.0,
) -> tuple[dict, dict]:
    """Runs a ``listen`` and a ``send`` peer process (each behind its exec prefix, e.g.
    ``ip netns exec NS``) and returns their JSON reports (listener, sender)."""
    secret = secrets.token_hex(16)
    env = _peer_env(secret)
    base = [sys.executable, "-m", "hierbench.transfer._peer"]
    common = ["--timeout", str(timeout), "--sndbuf", str(sndbuf), "--rcvbuf", str(rcvbuf)]
    lst = subprocess.Popen(
        [*listen_prefix, *base, "listen", "--host", listen_host, "--link", listen_link,
         *(["--echo"] if echo else []), *common],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    snd = None
    try:
        first = lst.stdout.readline()
        if not first:
            raise ProcessError(f"listener process failed: {lst.stderr.read()}")
        port = json.loads(first)["port"]
        size_args = ["--sizes", ",".join(map(str, sizes))] if sizes else []
        snd = subprocess.Popen(
            [*send_prefix, *base, "send", "--host", connect_host, "--port", str(port),
             "--link", send_link, "--burst", str(send_burst), "--count", str(count),
             "--bytes", str(nbytes), *size_args,
             *(["--echo"] if echo else []), *common],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        s_out, s_err = snd.communicate(timeout=timeout)
        l_out, l_err = lst.communicate(timeout=timeout)
        if snd.returncode or lst.returncode:
            raise ProcessError(
                f"peer processes failed (send rc={snd.returncode}, listen rc={lst.returncode}):"
                f"\n--- send ---\n{s_err}\n--- listen ---\n{l_err}"
            )
        return json.loads(l_out.splitlines()[-1]), json.loads(s_out.splitlines()[-1])
    finally:
        for p in (snd, lst):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def _summary(listener: dict, sender: dict) -> dict:
    recs = [r for r in listener["records"] if r["direction"] == "received"]
    first = recs[0]
    # End to end on the machine's one monotonic clock: first commit (sender) -> last byte arrived
    # (receiver). With burst 0 this can never exceed the rate, however late any thread woke.
    span_ns = recs[-1]["arrived_ns"] - first["enqueued_ns"]
    return {
        "goodput_bps": sum(r["nbytes"] for r in recs) * 8 / (span_ns * 1e-9),
        "recv_goodput_bps": listener["stats"]["recv_goodput_bps"],
        "first_message_latency_s": (first["delivered_ns"] - first["enqueued_ns"]) * 1e-9,
        "all_intact_in_order": all(ok for _, _, ok in listener["checks"])
        and [c[0] for c in listener["checks"]] == list(range(len(recs))),
        "messages": len(recs),
        "sender_goodput_bps": sender["stats"]["goodput_bps"],
    }


def compare(
    rate_bps: float,
    *,
    nbytes: int = 250_000,
    count: int = 8,
    burst_bytes: int | None = None,
    sndbuf: int = 65_536,
    timeout: float = 60.0,
) -> dict:
    """The same transfer through the engine's token bucket and through tc tbf, in namespaces.

    Returns ``{"rate_bps", "burst_bytes", "emulator": {...}, "tc": {...}, "tc_over_emulator"}``
    with the receiver's goodput and first-message latency of each mode.
    """
    burst = burst_bytes if burst_bytes is not None else max(15_000, int(rate_bps / 8 * 1e-3))
    with veth_pair() as veth:
        kw = {
            "listen_host": veth.addr_b, "connect_host": veth.addr_b,
            "listen_prefix": veth.exec_prefix("b"), "send_prefix": veth.exec_prefix("a"),
            "count": count, "nbytes": nbytes, "sndbuf": sndbuf, "timeout": timeout,
        }  # fmt: skip
        emulated = _summary(*run_pair(send_link=f"{int(rate_bps)}bit", send_burst=burst, **kw))
        veth.shape(rate_bps, burst)
        qdisc = veth.qdisc().strip()
        shaped = _summary(*run_pair(send_link="inf", **kw))
    return {
        "rate_bps": rate_bps,
        "burst_bytes": burst,
        "bytes": nbytes * count,
        "qdisc": qdisc,
        "emulator": emulated,
        "tc": shaped,
        "tc_over_emulator": shaped["goodput_bps"] / emulated["goodput_bps"],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m hierbench.transfer.netns",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rate", default="20mbit", help="link rate (e.g. 20mbit)")
    p.add_argument("--bytes", type=int, default=250_000, help="bytes per message")
    p.add_argument("--count", type=int, default=8, help="messages")
    p.add_argument("--burst", type=int, default=None, help="bucket depth in bytes (both modes)")
    args = p.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        sys.exit(f"kernel-shaped mode unavailable: {reason}")
    rate = Link.parse(args.rate).rate_bps("up")
    t0 = time.perf_counter()
    out = compare(rate, nbytes=args.bytes, count=args.count, burst_bytes=args.burst)
    out["wall_s"] = time.perf_counter() - t0
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
