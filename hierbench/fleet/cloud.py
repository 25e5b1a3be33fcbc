"""The cloud job: W worker processes, one ``torch.distributed`` process group, one cloud model.

:func:`launch_cloud` starts the workers with torch's elastic launcher
(``torch.distributed.launcher.api.elastic_launch``: the API behind ``torchrun``; a c10d
rendezvous on a free loopback port, as ``torchrun --standalone`` does; spawned workers, no
restarts: a failed worker stops the job). Each worker (:func:`worker_main`) joins the process
group from the environment the launcher sets (``env://``: ``MASTER_ADDR``, ``RANK``,
``WORLD_SIZE``), gloo on CPUs, NCCL when CUDA has a device per worker.

Worker w listens on its own TCP port (``PORT + w``; or a free port when PORT is 0, all ports
gathered to rank 0, which writes them to a ready file), accepts exactly the edges
``{i : i % W == w}`` (a connection that fails the handshake, says something else than a valid
hello, or claims an edge this worker does not serve is refused and waiting goes on), and trains
its replica of the cloud model under ``DistributedDataParallel``.

**The exact math** (policy ``lockstep``). Cloud step s: worker w receives the message of step s
from each served edge, decodes it and concatenates the batches in edge-id order (``n_w = |served
(w)| * B`` samples), and computes ``L_w = W / (E * B) * sum_{j in w} CE_j`` (a *sum* over its
samples, scaled). DDP averages gradients over the W workers, so every replica applies

    (1/W) * sum_w dL_w = (1 / (E * B)) * sum_{all E*B samples} dCE_j,

the gradient of the mean loss over the concatenation of all E edges' batches — one plain step on
E * B samples, whether or not W divides E (with equal shares the scaling is the plain mean
``CE.mean()`` of each worker). In real arithmetic always; in floating point exactly for W = 1
and 2 (scaling by 2 and dividing by 2 are exact, a sum of two terms does not depend on its
order: the tests find the replicas bit-identical to the oracle run on the same thread count),
only to rounding for W >= 3 (the all-reduce adds the workers' gradients in the ring's order).
BatchNorm: batch statistics are per worker (DDP without SyncBatchNorm, which torch runs on GPUs
only), over the worker's ``n_w`` samples; the running
statistics are rank 0's (DDP broadcasts rank 0's buffers before every forward). The oracle
(:mod:`hierbench.fleet.oracle`) computes exactly that.

**FedAvg of edge models** (``edge_sync fedavg:K``): after every K-th cloud step each worker
reads each served edge's parameter message of that step, writes it into row i of a zero
``(E, P)`` tensor, all-reduces it (a sum in which every row has one non-zero contribution, so
exact), and every worker averages the rows in edge-id order (``((r_0 + r_1) + ...) / E``): the
same bits on every worker and in the oracle, at E x P values per worker (a reduce-scatter of P
would be cheaper and only equal to rounding: for scale runs). Each edge gets the average back
and loads it before its next step: at a sync step the edge waits until the cloud has reached
that step.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.distributed.elastic.multiprocessing.errors import record

from hierbench import data as hdata
from hierbench import transfer
from hierbench.codec import ActivationCodec
from hierbench.errors import (
    CodecError,
    ConfigError,
    ProcessError,
    ProtocolError,
    TransferError,
    TransferTimeout,
)
from hierbench.fleet import wire
from hierbench.fleet.config import FleetConfig
from hierbench.fleet.record import cpu_now, now, write_json
from hierbench.methods import messages
from hierbench.methods.messages import Kind
from hierbench.methods.parts import (
    NORMALIZATION,
    as_input,
    autocast,
    build_parts,
    make_optimizer,
    optimizer_step,
    synthetic_input,
    warm_up,
)

SECRET_ENV = "HIERBENCH_SECRET"


def _backend(workers: int, requested: str) -> str:
    if requested != "auto":
        return requested
    if torch.cuda.is_available() and torch.cuda.device_count() >= workers:
        return "nccl"
    return "gloo"


class _Worker:
    def __init__(self, fcfg: FleetConfig, rank: int, world: int, device: torch.device) -> None:
        self.fcfg, self.rank, self.world, self.device = fcfg, rank, world, device
        self.cfg = fcfg.run
        self.served = fcfg.served(rank)
        self.log = lambda text: print(f"fleet worker {rank}: {text}", file=sys.stderr, flush=True)

    # -- edges ---------------------------------------------------------------------------------

    def accept_edges(self, lst: transfer.Listener, timeout: float) -> dict[int, dict]:
        """Accept every served edge once; refuse (and go on waiting after) anything else."""
        want = set(self.served)
        conns: dict[int, wire.Conn] = {}
        hellos: dict[int, dict] = {}
        deadline = time.monotonic() + timeout
        while want - set(conns):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransferTimeout(
                    f"worker {self.rank}: edges {sorted(want - set(conns))} did not connect "
                    f"within {timeout:.0f} s"
                )
            try:
                conn = wire.Conn(lst.accept(timeout=left))
            except TransferTimeout:
                continue
            try:
                hello = conn.recv_json(timeout=30.0)
                problem, edge = self._check_hello(hello, conns)
            except (TransferError, CodecError, ProtocolError, ValueError, TypeError) as exc:
                self.log(f"dropped a connection: {exc}")
                with contextlib.suppress(BaseException):
                    conn.close(timeout=0)
                continue
            if problem is not None:
                self.log(f"refused an edge: {problem}")
                with contextlib.suppress(BaseException):
                    conn.send(messages.pack_control({"type": "welcome", "error": problem}))
                    conn.close(timeout=2.0)
                continue
            conns[edge] = conn
            hellos[edge] = hello
            conn.send(messages.pack_control({"type": "welcome", "worker": self.rank}))
        self.conns = conns
        return hellos

    def _check_hello(self, hello: dict, conns: dict) -> tuple[str | None, int]:
        if hello.get("type") != "hello":
            return f"expected hello, got {hello.get('type')!r}", -1
        edge = hello.get("edge")
        if isinstance(edge, bool) or not isinstance(edge, int):
            return f"edge id {edge!r} is not an integer", -1
        if edge not in self.served:
            return f"worker {self.rank} serves edges {self.served}, not edge {edge}", edge
        if edge in conns:
            return f"edge {edge} is already connected", edge
        if hello.get("fleet") != self.fcfg.to_dict():
            return "this cloud runs another fleet config (the same settings on every role)", edge
        spe = hello.get("steps_per_epoch")
        if isinstance(spe, bool) or not isinstance(spe, int) or spe < 1:
            return f"steps_per_epoch {spe!r} is not an integer >= 1", edge
        return None, edge

    # -- training ------------------------------------------------------------------------------

    def run(self, lst: transfer.Listener, accept_timeout: float, io_timeout: float) -> dict:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        fcfg, cfg = self.fcfg, self.cfg
        t_listen = now()
        # The model first (while the edges start): it needs nothing from them.
        model, edge_part, net, head = build_parts(cfg)
        n_params = wire.flat_state(edge_part, head).numel() if fcfg.sync_every else 0
        if cfg.method == "cloud_only":
            shape = (cfg.batch_size, 3, cfg.input_size, cfg.input_size)
        else:
            shape = (cfg.batch_size, *model.cut_shape(cfg.cut))
        warm_up([net], synthetic_input(shape), None, cfg.num_classes, cfg)
        net.to(self.device)
        ids = None if self.device.type == "cpu" else [self.device]
        ddp = DistributedDataParallel(net, device_ids=ids)
        t_built = now()
        hellos = self.accept_edges(lst, accept_timeout)
        t_connected = now()
        spes = {int(h["steps_per_epoch"]) for h in hellos.values()}
        bounds = torch.tensor([min(spes), -max(spes)], dtype=torch.int64)
        dist.all_reduce(bounds, op=dist.ReduceOp.MIN)
        if len(spes) != 1 or int(bounds[0]) != -int(bounds[1]):
            raise ProtocolError(f"the edges disagree on steps per epoch ({sorted(spes)}, ...)")
        spe = min(spes)
        total = spe * cfg.epochs
        opt, sched = make_optimizer(cfg, net.parameters(), total)
        codec = ActivationCodec(cfg.codec)
        mean, std = NORMALIZATION[cfg.dataset]
        e, b, w = fcfg.edges, cfg.batch_size, self.world
        scale = w / (e * b)
        steps = []
        for step in range(total):
            t_wait, c0 = now(), cpu_now()
            msgs = [self._recv_step(i, step, io_timeout) for i in self.served]
            t_in = now()
            xs, ys = [], []
            for msg in msgs:
                if msg.kind == Kind.RAW:
                    x = hdata.normalize(messages.unpack_raw_images(msg.payload, b), mean, std)
                else:
                    x = codec.decode(msg.payload)
                if x.shape[0] != b:
                    raise ProtocolError(f"step {step}: a batch of {x.shape[0]}, expected {b}")
                xs.append(x)
                ys.append(msg.labels)
            x = as_input(torch.cat(xs).to(self.device), cfg)
            y = torch.cat(ys).to(self.device)
            with autocast(cfg):
                loss_sum = F.cross_entropy(ddp(x), y, reduction="sum")
            opt.zero_grad(set_to_none=True)
            (loss_sum * scale).backward()
            optimizer_step(opt, sched)
            t_trained = now()
            total_loss = loss_sum.detach().float().reshape(1).cpu()
            dist.all_reduce(total_loss)  # for the record: the mean loss over all E*B samples
            rec = {
                "step": step,
                "t_wait": t_wait,
                "t_in": t_in,
                "t_trained": t_trained,
                "wait_s": t_in - t_wait,
                "bytes_in": sum(m.nbytes for m in msgs),
                "loss": float(total_loss) / (e * b),
            }
            if fcfg.syncs_after(step):
                rec["t_sync"] = now()
                self._average_edges(step, n_params, io_timeout)
            rec["t1"] = now()
            rec["cpu_s"] = cpu_now() - c0
            steps.append(rec)
        for i in self.served:
            msg = self.conns[i].recv_msg(timeout=io_timeout)
            if msg.kind != Kind.END:
                raise ProtocolError(
                    f"edge {i}: expected END after step {total - 1}, got {msg.kind.name}"
                )
        self.net = net
        return {
            "worker": self.rank,
            "served": self.served,
            "backend": dist.get_backend(),
            "device": str(self.device),
            "t_listen": t_listen,
            "t_built": t_built,
            "t_connected": t_connected,
            "steps_per_epoch": spe,
            "total_steps": total,
            "steps": steps,
        }

    def _recv_step(self, edge: int, step: int, timeout: float):
        msg = self.conns[edge].recv_msg(timeout=timeout)
        want = Kind.RAW if self.cfg.method == "cloud_only" else Kind.ACT
        if msg.kind != want or msg.step != step:
            raise ProtocolError(
                f"edge {edge}: expected {want.name} of step {step}, got {msg.kind.name} of step "
                f"{msg.step}"
            )
        if msg.labels is None or msg.labels.numel() != self.cfg.batch_size:
            raise ProtocolError(f"edge {edge}, step {step}: expected {self.cfg.batch_size} labels")
        if int(msg.labels.max()) >= self.cfg.num_classes:
            raise ProtocolError(f"edge {edge}, step {step}: a label >= {self.cfg.num_classes}")
        return msg

    def _average_edges(self, step: int, n_params: int, timeout: float) -> None:
        import torch.distributed as dist

        rows = torch.zeros(self.fcfg.edges, n_params)
        for i in self.served:
            msg = self.conns[i].recv_msg(timeout=timeout)
            rows[i] = wire.unpack_params(msg, step, n_params)
        rows = rows.to(self.device)
        dist.all_reduce(rows)  # one non-zero contribution per row: exact
        rows = rows.cpu()
        avg = rows[0].clone()
        for r in rows[1:]:
            avg += r
        avg /= self.fcfg.edges
        reply = wire.pack_params(step, avg)
        for i in self.served:
            self.conns[i].send(reply)


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
    inherited). Writes ``<out_dir>/worker-<rank>.json`` (its part of the run record) and, with
    ``save_state``, ``<out_dir>/cloud-<rank>.pt`` (the replica's state dict).
    """
    import torch.distributed as dist

    fcfg = FleetConfig.from_dict(json.loads(fleet_json))
    torch.set_num_threads(fcfg.run.threads_cloud)
    secret = os.environ.get(SECRET_ENV, "").encode()
    chosen = _backend(fcfg.workers, backend)
    dist.init_process_group(chosen)
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        if world != fcfg.workers:
            raise ConfigError(f"{world} processes joined a cloud of {fcfg.workers} workers")
        device = torch.device("cpu")
        if chosen == "nccl":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
            torch.cuda.set_device(device)
        worker = _Worker(fcfg, rank, world, device)
        lst = transfer.listen(host, port + rank if port else 0, secret, link=_link(fcfg))
        with lst:
            ports = torch.zeros(world, dtype=torch.int64)
            ports[rank] = lst.port
            dist.all_reduce(ports)
            addresses = [[lst.host, int(p)] for p in ports]
            if rank == 0:
                print(
                    "hierbench fleet cloud listening on "
                    + ",".join(f"{h}:{p}" for h, p in addresses),
                    flush=True,
                )
                if ready_file:
                    ready = Path(ready_file)
                    write_json(ready, {"workers": addresses, "host": socket.gethostname()})
            part = worker.run(lst, accept_timeout, io_timeout)
        for c in worker.conns.values():
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
) -> None:
    """Start the W workers with torch's elastic launcher and wait for them (blocks; must run in
    a process's main thread: the agent installs signal handlers). The secret: ``$HIERBENCH_SECRET``.

    Raises:
        ProcessError: a worker failed (the first failure's message).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if len(os.environ.get(SECRET_ENV, "")) < transfer.MIN_SECRET_BYTES:
        raise ConfigError(
            f"the cloud workers need a shared secret of >= {transfer.MIN_SECRET_BYTES} bytes in "
            f"${SECRET_ENV} (or --secret-file)"
        )
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=fcfg.workers,
        run_id=f"hierbench-fleet-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",  # a free port on loopback, as torchrun --standalone
        max_restarts=0,
        monitor_interval=0.1,
        start_method="spawn",
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
