"""The cloud job: W worker processes, one ``torch.distributed`` process group, one cloud model.

:func:`launch_cloud` starts the workers with torch's elastic launcher
(``torch.distributed.launcher.api.elastic_launch``: the API behind ``torchrun``; a c10d
rendezvous on a free loopback port, as ``torchrun --standalone`` does; spawned workers, no
restarts: a failed worker stops the job). A cloud across N machines runs the launcher on each
(``nnodes``, ``node_rank``, ``rdzv_endpoint``: torch's static rendezvous at node 0's
``HOST:PORT``; node n runs the W / N workers of global ranks ``n * W / N`` onwards). Each worker
(:func:`worker_main`) joins the process group from the environment the launcher sets
(``env://``: ``MASTER_ADDR``, ``RANK``, ``WORLD_SIZE``), gloo on CPUs, NCCL when CUDA has a
device per worker.

Worker w listens on its own TCP port (``PORT + w`` on its node's host; or a free port when PORT
is 0, all addresses gathered to rank 0, which writes them to a ready file), accepts exactly the
edges
``{i : i % W == w}`` (a connection that fails the handshake, says something else than a valid
hello, or claims an edge this worker does not serve is refused and waiting goes on), and trains
its replica of the cloud model under ``DistributedDataParallel``. **The run starts together**:
a worker welcomes its edges only once every worker has all of its edges (the all-reduce of the
edges' steps per epoch is the barrier), so no edge trains while another is still starting and a
fleet's measured throughput does not include its slowest process start.

What each worker does (the exact math of a step, split learning, FedAvg of edge models,
edges that drop and rejoin, policy ``present``): :mod:`hierbench.fleet.worker`.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import uuid
from pathlib import Path

import torch
from torch.distributed.elastic.multiprocessing.errors import record

from hierbench import transfer
from hierbench.errors import ConfigError, ProcessError
from hierbench.fleet.config import FleetConfig, check_nodes, parse_address
from hierbench.fleet.record import write_json
from hierbench.fleet.worker import CloudWorker

SECRET_ENV = "HIERBENCH_SECRET"


def _backend(workers: int, requested: str) -> str:
    if requested != "auto":
        return requested
    if torch.cuda.is_available() and torch.cuda.device_count() >= workers:
        return "nccl"
    return "gloo"


@record  # a failure's message and traceback reach the launcher (ChildFailedError)
def worker_main(
    fleet_json: str,
    host: str,
    port: int,
    ready_file: str | None,
    out_dir: str | None,
    save_state: bool = False,
    backend: str = "auto",
    accept_timeout: float = 300.0,
    io_timeout: float = 600.0,
) -> None:
    """One cloud worker (the elastic launcher's entrypoint; also runs under ``torchrun``).

    The shared secret comes from ``$HIERBENCH_SECRET`` (the launcher's environment is
    inherited). Writes ``<out_dir>/worker-<rank>.json`` (its part of the run record, with its
    node, local rank and hostname) and, with ``save_state``, ``<out_dir>/cloud-<rank>.pt`` (the
    replica's state dict). Rank 0 prints every worker's ``host:port`` and writes them to
    ``ready_file`` (``{"workers": [[host, port], ...], "host": its hostname, "nodes": N,
    "hostnames": [per worker]}``); each worker's host is its own node's ``host``.
    """
    import torch.distributed as dist

    fcfg = FleetConfig.from_dict(json.loads(fleet_json))
    torch.set_num_threads(fcfg.run.threads_cloud)
    secret = os.environ.get(SECRET_ENV, "").encode()
    chosen = _backend(fcfg.workers, backend)
    # The group's collectives must outlast an edge's rejoin (the other workers wait in the
    # all-reduce meanwhile): at least torch's default 30 minutes.
    wait = max(1800.0, fcfg.rejoin_timeout + io_timeout + 60.0)
    dist.init_process_group(chosen, timeout=datetime.timedelta(seconds=wait))
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        if world != fcfg.workers:
            raise ConfigError(f"{world} processes joined a cloud of {fcfg.workers} workers")
        device = torch.device("cpu")
        if chosen == "nccl":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
            torch.cuda.set_device(device)
        _check_same_config(fleet_json, device)
        node = {  # set by the launcher (torchrun too): which machine of the cloud this is
            "node": int(os.environ["GROUP_RANK"]),
            "nodes": int(os.environ["GROUP_WORLD_SIZE"]),
            "local_rank": int(os.environ["LOCAL_RANK"]),
            "hostname": socket.gethostname(),
        }
        worker = CloudWorker(fcfg, rank, world, device)
        lst = transfer.listen(host, port + rank if port else 0, secret, link=_link(fcfg))
        with lst:
            gathered = _gather_addresses(lst.host, lst.port, node["hostname"], world, device)
            addresses = [[h, int(p)] for h, p, _ in gathered]
            if rank == 0:
                print(
                    "hierbench fleet cloud listening on "
                    + ",".join(f"{h}:{p}" for h, p in addresses),
                    flush=True,
                )
                if ready_file:
                    ready = {
                        "workers": addresses,
                        "host": node["hostname"],
                        "nodes": node["nodes"],
                        "hostnames": [name for _, _, name in gathered],
                    }
                    write_json(Path(ready_file), ready)
            part = worker.run(lst, accept_timeout, io_timeout)
            part.update(node, listen=[lst.host, lst.port])
        for c in worker.conns.values():
            if c is not None:
                c.close()
        if out_dir:
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            write_json(out / f"worker-{rank}.json", part)
            if save_state:
                torch.save(worker.net.state_dict(), out / f"cloud-{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _gather_addresses(host: str, port: int, hostname: str, world: int, device) -> list:
    """Every worker's ``[host, port, hostname]``, in rank order: fixed-size UTF-8 byte rows
    all-gathered as tensors (not ``all_gather_object``, which unpickles what other machines
    send)."""
    import torch.distributed as dist

    width = 256
    row = torch.zeros(2 * width + 8, dtype=torch.uint8)
    for k, text in enumerate((host, hostname)):
        raw = text.encode()[: width - 1]
        row[k * width : k * width + len(raw)] = torch.tensor(list(raw), dtype=torch.uint8)
    row[2 * width :] = torch.tensor(list(int(port).to_bytes(8, "little")), dtype=torch.uint8)
    rows = [torch.zeros_like(row, device=device) for _ in range(world)]
    dist.all_gather(rows, row.to(device))
    out = []
    for r in rows:
        b = bytes(r.cpu().tolist())
        texts = [b[k * width : (k + 1) * width].split(b"\0", 1)[0].decode() for k in (0, 1)]
        out.append([texts[0], int.from_bytes(b[2 * width :], "little"), texts[1]])
    return out


def _check_same_config(fleet_json: str, device: torch.device) -> None:
    """Every worker (every node of the cloud) runs the same fleet config, else ConfigError.

    A 56-bit digest of the config is all-reduced to its minimum and maximum (one all-reduce of
    ``[d, -d]`` with MIN): they differ iff some worker's config does.
    """
    import hashlib

    import torch.distributed as dist

    canonical = json.dumps(json.loads(fleet_json), sort_keys=True).encode()
    d = int.from_bytes(hashlib.sha256(canonical).digest()[:7], "big")
    bounds = torch.tensor([d, -d], dtype=torch.int64, device=device)
    dist.all_reduce(bounds, op=dist.ReduceOp.MIN)
    if int(bounds[0]) != -int(bounds[1]):
        raise ConfigError(
            "the cloud's nodes run different fleet configs: give every --role cloud the same "
            "settings (or --config fleet.json)"
        )


def _link(fcfg: FleetConfig) -> transfer.Link:
    """The downlink shaping of every edge connection (``run.link``; None: unshaped)."""
    return transfer.Link() if fcfg.run.link is None else transfer.Link.parse(fcfg.run.link)


def launch_cloud(
    fcfg: FleetConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ready_file: str | Path | None = None,
    out_dir: str | Path | None = None,
    save_state: bool = False,
    backend: str = "auto",
    accept_timeout: float = 300.0,
    nnodes: int = 1,
    node_rank: int = 0,
    rdzv_endpoint: str | None = None,
) -> None:
    """Start this machine's workers with torch's elastic launcher and wait for them (blocks;
    must run in a process's main thread: the agent installs signal handlers). The secret:
    ``$HIERBENCH_SECRET``.

    One machine (``nnodes`` 1, no ``rdzv_endpoint``): all W workers, a c10d rendezvous on a free
    loopback port (as ``torchrun --standalone``). A cloud of ``nnodes`` machines: call this on
    each, with the same ``fcfg`` and ``rdzv_endpoint`` (``HOST:PORT`` of node 0, reachable from
    every node) and its ``node_rank``; each runs W / N workers, global ranks
    ``node_rank * W / N + local_rank`` (torch's *static* rendezvous: node 0's agent serves a
    TCPStore on that port, which is also the process group's ``MASTER_ADDR:MASTER_PORT``).
    ``host``: this node's listen address (worker w listens on ``port + w``).

    Raises:
        ConfigError: ``nnodes`` does not divide W, ``node_rank`` is not in ``[0, nnodes)``,
            several nodes without ``rdzv_endpoint`` (or with port 0 there), no secret.
        ProcessError: a worker on this node failed (the first failure's message).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    check_nodes(fcfg.workers, nnodes, node_rank)
    if rdzv_endpoint is None:
        if nnodes > 1:
            raise ConfigError(
                f"a cloud of {nnodes} nodes needs a rendezvous endpoint (--rdzv-endpoint "
                "HOST:PORT: node 0's address and a free port, the same on every node)"
            )
        rdzv = dict(  # a free port on loopback, as torchrun --standalone
            rdzv_backend="c10d",
            rdzv_endpoint="127.0.0.1:0",
            run_id=f"hierbench-fleet-{uuid.uuid4().hex[:12]}",
        )
    else:
        _, rdzv_port = parse_address(rdzv_endpoint, "rendezvous endpoint")
        if rdzv_port == 0:
            raise ConfigError(
                f"rendezvous endpoint {rdzv_endpoint!r}: port 0; every node needs the same "
                "fixed port (node 0 listens on it)"
            )
        rdzv = dict(  # ranks by node_rank; the same run id on every node (the store's prefix)
            rdzv_backend="static",
            rdzv_endpoint=rdzv_endpoint.strip(),
            rdzv_configs={"rank": node_rank},
            run_id="hierbench-fleet",
        )
    if len(os.environ.get(SECRET_ENV, "")) < transfer.MIN_SECRET_BYTES:
        raise ConfigError(
            f"the cloud workers need a shared secret of >= {transfer.MIN_SECRET_BYTES} bytes in "
            f"${SECRET_ENV} (or --secret-file)"
        )
    config = LaunchConfig(
        min_nodes=nnodes,
        max_nodes=nnodes,
        nproc_per_node=fcfg.workers // nnodes,
        max_restarts=0,
        monitor_interval=0.1,
        start_method="spawn",
        **rdzv,
    )
    args = (
        json.dumps(fcfg.to_dict()),
        host,
        port,
        None if ready_file is None else str(ready_file),
        None if out_dir is None else str(out_dir),
        save_state,
        backend,
        accept_timeout,
    )
    try:
        elastic_launch(config, worker_main)(*args)
    except ChildFailedError as exc:
        failures = exc.failures
        first = failures[min(failures)] if failures else None
        why = first.message if first is not None else str(exc)
        raise ProcessError(f"a cloud worker failed: {why}") from None
