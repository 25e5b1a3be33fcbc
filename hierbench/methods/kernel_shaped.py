"""A two-process run whose link rates are the kernel's, not the engine's: validation that does not
rest on the engine's own token bucket (which enforces exactly the runtime model's ``8·b/R``).

The edge and the cloud each run in a network namespace (:mod:`hierbench.transfer.netns`), joined
by a veth pair whose two egresses carry a ``tc tbf`` at the run's uplink and downlink rates. The
engine then paces nothing; it only adds the one-way latency (these kernels have no ``netem``), so
``cfg.link = "3g"`` runs as tbf 1 Mbit/s up, 4 Mbit/s down plus the engine's 75 ms. Needs root,
``ip`` and ``tc`` (:func:`hierbench.transfer.netns.unavailable_reason` says why not).

The record is the edge's, as with :func:`hierbench.methods.runner.run_two_processes`, plus
``shaper``: how the link was made. Its ``config`` is the run's own (``link="3g"``), so it is
predicted like the token-bucket runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

from hierbench.errors import ProcessError
from hierbench.methods.config import RunConfig
from hierbench.spec.links import parse_link

__all__ = ["engine_link", "run_kernel_shaped", "unavailable_reason"]

#: tbf bucket depth: a few full-size frames (the engine's own bucket is a pure rate limiter).
TBF_BURST_BYTES = 4_500


def unavailable_reason() -> str | None:
    """None if kernel-shaped runs can run here, else why not (not root, no ip/tc...)."""
    from hierbench.transfer import netns

    return netns.unavailable_reason()


def engine_link(link: str) -> str:
    """What the engine does in a kernel-shaped run: no pacing, the link's one-way latency."""
    return f"inf/{parse_link(link).latency_s * 1e3:g}ms"


def run_kernel_shaped(
    cfg: RunConfig, *, cpus: tuple[int | None, int | None] = (None, None), timeout: float = 900
) -> dict:
    """Run ``cfg`` with the edge in one namespace, the cloud in another, the rates by tc tbf."""
    from hierbench.methods.runner import start_cloud_process
    from hierbench.transfer import netns

    if cfg.link is None:
        raise ProcessError("a kernel-shaped run needs a link to shape (cfg.link is None)")
    spec = parse_link(cfg.link)
    engine_cfg = dataclasses.replace(cfg, link=engine_link(cfg.link))
    secret = secrets.token_hex(32)
    with netns.veth_pair() as pair:
        pair.shape(spec.up_bps, TBF_BURST_BYTES, side="a")  # edge -> cloud
        pair.shape(spec.down_bps, TBF_BURST_BYTES, side="b")  # cloud -> edge
        qdiscs = {"up": pair.qdisc().strip()}
        cloud, host, port = start_cloud_process(
            secret,
            link=engine_cfg.link,
            listen=f"{pair.addr_b}:0",
            threads=cfg.threads_cloud,
            cpu=cpus[1],
            prefix=pair.exec_prefix("b"),
        )
        out = Path(f"/tmp/hierbench-kernel-{os.getpid()}-{secrets.token_hex(4)}.json")
        try:
            cmd = [*pair.exec_prefix("a"), sys.executable, "-m", __name__]
            cmd += [json.dumps(engine_cfg.to_dict()), host, str(port), str(out)]
            cmd += [str(cpus[0]) if cpus[0] is not None else "-"]
            env = dict(os.environ, HIERBENCH_SECRET=secret)
            edge = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            if edge.returncode:
                raise ProcessError(f"kernel-shaped edge failed: {edge.stderr[-3000:]}")
            record = json.loads(out.read_text())
            rc = cloud.wait(timeout=60)
            if rc:
                raise ProcessError(f"cloud process exited with {rc}: {cloud.stderr.read()[-2000:]}")
        finally:
            out.unlink(missing_ok=True)
            if cloud.poll() is None:
                cloud.kill()
                cloud.wait()
    record["config"] = cfg.to_dict()  # the run's link; the engine's share is under "shaper"
    record["processes"] = 2
    record["shaper"] = {
        "kind": "tc tbf in network namespaces",
        "up_bps": spec.up_bps,
        "down_bps": spec.down_bps,
        "burst_bytes": TBF_BURST_BYTES,
        "engine_link": engine_cfg.link,
        "qdisc_up": qdiscs["up"],
    }
    return record


def _edge_main(argv: list[str]) -> int:
    """``python -m hierbench.methods.kernel_shaped CONFIG_JSON HOST PORT OUT CPU|-`` (the edge
    half, run inside its namespace; the secret comes in ``HIERBENCH_SECRET``)."""
    from hierbench.methods.runner import run_edge

    cfg_json, host, port, out, cpu = argv
    cfg = RunConfig.from_dict(json.loads(cfg_json))
    secret = os.environ["HIERBENCH_SECRET"].encode()
    record = run_edge(
        cfg, host, int(port), secret, cpu=None if cpu == "-" else int(cpu), progress=False
    )
    Path(out).write_text(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(_edge_main(sys.argv[1:]))
