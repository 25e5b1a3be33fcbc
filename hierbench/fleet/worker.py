"""One cloud worker: the edges it serves, its DDP steps, the loop of each policy, rejoins and
FedAvg of edge models.

:func:`hierbench.fleet.cloud.worker_main` (the process the launcher starts) builds one
:class:`CloudWorker` and calls :meth:`CloudWorker.run`; the launch, the rendezvous and the
workers' addresses are :mod:`hierbench.fleet.cloud`'s.

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

**Split learning** (``method split``): the cloud step's input ``x`` (the decoded activations of
the served edges) is a leaf; after the backward pass above, ``x.grad = W / (E * B) * dCE/dx``,
and each served edge gets its rows times ``E / W`` (encoded with the run's ``grad_codec``):
``(1 / B) * dCE_i/dx_i``, the gradient of *its own* mean loss (SplitFed's convention: an edge's
step does not shrink as E grows; with E = 1 it is plain split learning). The edge waits for it
before its next step. Scaling by E / W is exact for the tested W = 1, 2 with E = 2.

**FedAvg of edge models** (``edge_sync fedavg:K``): after every K-th cloud step each worker
reads each served edge's parameter message of that step, writes it into row i of a zero
``(E, P)`` tensor, all-reduces it (a sum in which every row has one non-zero contribution, so
exact), and every worker averages the rows in edge-id order (``((r_0 + r_1) + ...) / E``): the
same bits on every worker and in the oracle, at E x P values per worker (a reduce-scatter of P
would be cheaper and only equal to rounding: for scale runs). Each edge gets the average back
and loads it before its next step: at a sync step the edge waits until the cloud has reached
that step.

**Edges that drop and rejoin** (``rejoin_timeout`` > 0): when a receive from an edge fails
(closed or reset), its worker waits up to ``rejoin_timeout`` for that edge id to connect again
(:meth:`CloudWorker.rejoin`: same config, a ``--resume`` hello whose checkpoint can send the step
the cloud needs; anything else is refused and waiting goes on), while the lockstep step waits
and the other edges fill their bounded backlogs; the other workers wait in the all-reduce
(the process group's timeout is raised to outlast it). The rejoined edge resends or recomputes
exactly the steps the cloud still needs (:func:`hierbench.fleet.edge.run_edge`), so the run's
math is the uninterrupted run's (split learning: the worker keeps each edge's last 2N + 1
gradient messages, :meth:`CloudWorker._keep_grad`, and resends those of the steps it replays). Past
``rejoin_timeout`` the worker fails with an error naming
the edge, which stops the job; with ``rejoin_timeout`` 0 a dropped edge stops it at once.

**Policy ``present``: the cloud trains on the edges that are there.** Each worker keeps, per
served edge, the next step it needs from it. Cloud step s: every worker receives the next
message of each served edge that is connected (an edge whose receive fails is *away* from then
on, skipped), and all workers all-reduce (samples present ``n_s``, edges with steps left). Each
worker's loss is ``W / n_s * sum CE`` over its samples, so the update is the gradient of the
mean loss over the ``n_s`` samples present (= lockstep's when every edge is there); a worker
with no message in that step runs a forward and backward pass of zero weight on a zero batch
(exact zero gradients for DDP's all-reduce; BatchNorm statistics put back). The learning rate
is the lockstep schedule's at ``t = samples trained on so far / (E B)`` cloud steps (a step
with fewer edges advances it less; the schedule ends when every sample has been trained on).
Between steps a worker accepts the away edges that reconnect (never waiting), with the same
hello checks and welcome (``next_step``) as above; the edge resends or recomputes from its
checkpoint, so no edge step is lost or trained twice, only later. An edge away longer than
``rejoin_timeout`` (at once when 0) is given up: the run finishes without its remaining steps
and the worker's ``lost`` says from which. Each step records the ``[edge, its step]`` pairs it
consumed, and :func:`hierbench.fleet.oracle.train_fleet_schedule` replays that schedule (the
tests hold the roles to it bit for bit). A step in which no worker has a message (every edge
with steps left is away) is not taken: the workers wait, polling for rejoins. Independent
edge models and hierarchical or cloud-only only: a FedAvg sync or a split step needs every
edge.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time

import torch
import torch.nn.functional as F

from hierbench import data as hdata
from hierbench import transfer
from hierbench.codec import ActivationCodec
from hierbench.errors import (
    CodecError,
    ProcessError,
    ProtocolError,
    TransferError,
    TransferTimeout,
)
from hierbench.fleet import wire
from hierbench.fleet.config import FleetConfig
from hierbench.fleet.record import cpu_now, now
from hierbench.methods import messages
from hierbench.methods.messages import Kind, RoleMessage
from hierbench.methods.parts import (
    NORMALIZATION,
    as_input,
    as_wire,
    autocast,
    build_parts,
    make_optimizer,
    optimizer_step,
    synthetic_input,
    warm_up,
)


class CloudWorker:
    """One worker of the cloud job (rank ``rank`` of ``world``): accepts its served edges,
    trains its DDP replica of the cloud model, answers rejoins; :meth:`run` returns its part of
    the run record."""

    def __init__(self, fcfg: FleetConfig, rank: int, world: int, device: torch.device) -> None:
        self.fcfg, self.rank, self.world, self.device = fcfg, rank, world, device
        self.cfg = fcfg.run
        self.served = fcfg.served(rank)
        self.log = lambda text: print(f"fleet worker {rank}: {text}", file=sys.stderr, flush=True)
        self.conns: dict[int, wire.Conn | None] = {}
        self.lst: transfer.Listener | None = None
        self.spe = 0
        self.last_avg: tuple[int, bytes] | None = None  # (step, the PARAMS message sent)
        self.rejoins: list[dict] = []
        #: split learning: per served edge, the gradient messages of its recent steps (kept so
        #: that an edge rejoining from its checkpoint can replay them; see :meth:`_keep_grad`)
        self.sent_grads: dict[int, dict[int, bytes]] = {i: {} for i in self.served}
        self.lost: list[dict] = []  # edges given up (policy present)
        self.away: dict[int, tuple[float, str]] = {}  # edge -> (t_lost, why) (policy present)

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
                got = self._screen(
                    lst, left, 30.0, lambda h: self._check_hello(h, conns), "", "refused an edge"
                )
            except TransferTimeout:
                continue
            if got is not None:
                conn, hello, edge = got
                conns[edge] = conn
                hellos[edge] = hello
        self.conns = conns
        return hellos

    def _screen(self, lst, wait: float, hello_wait: float, check, context: str, refused: str):
        """Accept one connection (waiting up to ``wait`` s: TransferTimeout when none came),
        read its hello and ``check(hello) -> (problem, edge)``. Returns ``(conn, hello, edge)``,
        or None when the connection was dropped (it broke, or sent no valid hello) or refused
        (told its problem); either way it is closed and logged, and waiting can go on."""
        conn = wire.Conn(lst.accept(timeout=wait))
        try:
            hello = conn.recv_json(timeout=hello_wait)
            problem, edge = check(hello)
        except (TransferError, CodecError, ProtocolError, ValueError, TypeError) as exc:
            _hang_up(conn, f"dropped a connection{context}: {exc}", self.log)
            return None
        if problem is not None:
            _refuse(conn, problem, self.log, refused)
            return None
        return conn, hello, edge

    def welcome_all(self) -> None:
        """Welcome every served edge (in edge-id order): called once every worker has all its
        edges, so that no edge trains while another is still starting. An edge that died
        meanwhile is only logged here (:meth:`_send`): the first receive from it fails and waits
        for it to rejoin (``rejoin_timeout``), or stops the job."""
        for edge in self.served:
            welcome = {"type": "welcome", "worker": self.rank, "next_step": 0}
            self._send(edge, messages.pack_control(welcome))

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
        return self._check_resume(hello, edge, 0), edge

    def _check_resume(self, hello: dict, edge: int, next_step: int) -> str | None:
        """Whether an edge can give the cloud its step ``next_step`` onwards (None: it can)."""
        resume = hello.get("resume")
        if resume is None:
            if next_step > 0:
                return (
                    f"edge {edge} rejoins a run whose cloud needs its step {next_step}: start "
                    "it with --resume (and its checkpoint folder)"
                )
            return None
        acked = resume.get("acked") if isinstance(resume, dict) else None
        if isinstance(acked, bool) or not isinstance(acked, int) or acked < 0:
            return f"resume {resume!r}: expected {{step, acked}} with integer steps"
        if acked > next_step:
            return (
                f"edge {edge}'s checkpoint can send steps from {acked} on, but the cloud needs "
                f"its step {next_step} (a checkpoint of another run?)"
            )
        if self.cfg.method == "split":  # it replays steps c .. next_step - 1 with their gradients
            c = resume.get("step")
            kept = self.sent_grads.get(edge, {})
            if isinstance(c, bool) or not isinstance(c, int) or not acked <= c <= next_step:
                return f"resume {resume!r}: its step must be in [acked, {next_step}]"
            missing = [s for s in range(c, next_step) if s not in kept]
            if missing:
                return (
                    f"edge {edge}'s checkpoint is at step {c}, but the cloud kept its gradients "
                    f"only from step {min(kept, default=next_step)} (checkpoint_every?)"
                )
        return None

    def _keep_grad(self, edge: int, step: int, msg: bytes) -> None:
        """Split learning: keep the gradient message of ``edge``'s ``step`` for a rejoin. An
        edge checkpoints every N steps and only N steps ahead of the cloud's acks, so its last
        checkpoint is at most 2N steps old: 2N + 1 steps are kept."""
        every = self.cfg.checkpoint_every
        if not every:
            return
        kept = self.sent_grads[edge]
        kept[step] = msg
        for s in [s for s in kept if s < step - 2 * every]:
            del kept[s]

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
        self.lst = lst
        hellos = self.accept_edges(lst, accept_timeout)
        t_connected = now()
        spes = {int(h["steps_per_epoch"]) for h in hellos.values()}
        bounds = torch.tensor([min(spes), -max(spes)], dtype=torch.int64)
        dist.all_reduce(bounds, op=dist.ReduceOp.MIN)
        if len(spes) != 1 or int(bounds[0]) != -int(bounds[1]):
            raise ProtocolError(f"the edges disagree on steps per epoch ({sorted(spes)}, ...)")
        spe = self.spe = min(spes)
        # The all-reduce above is the start barrier: every worker has all its edges now.
        self.welcome_all()
        t_welcomed = now()
        total = spe * cfg.epochs
        opt, sched = make_optimizer(cfg, net.parameters(), total)
        self.codec = ActivationCodec(cfg.codec)
        self.grad_codec = ActivationCodec(cfg.grad_codec)
        if fcfg.policy == "present":
            steps = self._loop_present(ddp, opt, net, shape, total, io_timeout)
        else:
            steps = self._loop_lockstep(ddp, opt, sched, total, n_params, io_timeout)
        self.net = net
        return {
            "worker": self.rank,
            "served": self.served,
            "backend": dist.get_backend(),
            "device": str(self.device),
            "t_listen": t_listen,
            "t_built": t_built,
            "t_connected": t_connected,
            "t_welcomed": t_welcomed,
            "steps_per_epoch": spe,
            "total_steps": total,
            "rejoin_timeout": fcfg.rejoin_timeout,
            "rejoins": self.rejoins,
            "lost": self.lost,
            "steps": steps,
        }

    # -- cloud steps ---------------------------------------------------------------------------

    def _batch(self, msgs: list, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The cloud step's input and labels: the messages' batches decoded and concatenated
        (in the order given: edge-id order)."""
        cfg, b = self.cfg, self.cfg.batch_size
        mean, std = NORMALIZATION[cfg.dataset]
        xs, ys = [], []
        for msg in msgs:
            if msg.kind == Kind.RAW:
                x = hdata.normalize(messages.unpack_raw_images(msg.payload, b), mean, std)
            else:
                x = self.codec.decode(msg.payload)
            if x.shape[0] != b:
                raise ProtocolError(f"step {step}: a batch of {x.shape[0]}, expected {b}")
            xs.append(x)
            ys.append(msg.labels)
        return as_input(torch.cat(xs).to(self.device), cfg), torch.cat(ys).to(self.device)

    def _loop_lockstep(self, ddp, opt, sched, total: int, n_params: int, io_timeout: float):
        """Policy ``lockstep`` (see the module docstring): the per-step records."""
        import torch.distributed as dist

        fcfg, cfg = self.fcfg, self.cfg
        split = cfg.method == "split"
        e, b, w = fcfg.edges, cfg.batch_size, self.world
        spe = self.spe
        scale = w / (e * b)
        steps = []
        for step in range(total):
            t_wait, c0 = now(), cpu_now()
            msgs = [self._recv_step(i, step, io_timeout) for i in self.served]
            t_in = now()
            x, y = self._batch(msgs, step)
            if split:
                x = x.detach().requires_grad_(True)
            with autocast(cfg):
                loss_sum = F.cross_entropy(ddp(x), y, reduction="sum")
            opt.zero_grad(set_to_none=True)
            (loss_sum * scale).backward()
            optimizer_step(opt, sched)
            if split:  # each served edge: the gradient of its own mean loss (x E / W, see above)
                g = x.grad * (e / w)
                for j, i in enumerate(self.served):
                    frame = self.grad_codec.encode(as_wire(g[j * b : (j + 1) * b]).contiguous())
                    grad_msg = messages.pack(RoleMessage(Kind.GRAD, step, step // spe, None, frame))
                    self._keep_grad(i, step, grad_msg)
                    self._send(i, grad_msg)
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
            every = cfg.checkpoint_every
            if every and (step + 1) % every == 0 and step + 1 < total:
                ack = messages.pack_control({"type": "ack", "next_step": step + 1})
                for i in self.served:  # the edges may forget their uploads below step + 1
                    self._send(i, ack)
            rec["t1"] = now()
            rec["cpu_s"] = cpu_now() - c0
            steps.append(rec)
        for i in self.served:
            msg = self._recv(i, io_timeout, next_step=total)
            if msg.kind != Kind.END:
                raise ProtocolError(
                    f"edge {i}: expected END after step {total - 1}, got {msg.kind.name}"
                )
            # every upload is in: the edge may close (it waits for this, so that closing with
            # uploads in flight cannot reset the connection and lose them)
            self._send(i, messages.pack_control({"type": "done"}))
        return steps

    def _loop_present(self, ddp, opt, net, shape: tuple, total: int, io_timeout: float):
        """Policy ``present`` (see the module docstring): the per-step records.

        Every worker runs the same number of cloud steps: each step starts with an all-reduce
        of (samples present, edges not finished); the run ends when no edge is left, and a step
        in which no worker has a message is skipped (a short pause to let edges rejoin). A
        worker with no message in a step others train on runs a zero-weighted pass
        (:meth:`_idle_pass`) so that DDP's all-reduce still has its gradients."""
        import torch.distributed as dist

        fcfg, cfg = self.fcfg, self.cfg
        e, b, w = fcfg.edges, cfg.batch_size, self.world
        need = dict.fromkeys(self.served, 0)  # each served edge's next step the cloud needs
        finished: set[int] = set()
        consumed = 0  # samples trained on so far, over all workers
        steps: list[dict] = []
        while True:
            t_wait, c0 = now(), cpu_now()
            self._admit_rejoins(need)
            got = []
            for i in self.served:
                if i in finished or i in self.away or any(r["edge"] == i for r in self.lost):
                    continue
                msg = self._recv_present(i, need[i], total, io_timeout)
                if msg is None:
                    continue
                if msg.kind == Kind.END:
                    finished.add(i)
                    self._send(i, messages.pack_control({"type": "done"}))
                else:
                    got.append((i, msg))
            self._give_up(need)
            counts = torch.tensor(
                [len(got) * b, len(self.served) - len(finished) - len(self.lost)],
                dtype=torch.int64,
            )
            dist.all_reduce(counts)
            n, left = int(counts[0]), int(counts[1])
            if left == 0:
                break
            if n == 0:  # every edge with steps left is away: wait for rejoins
                time.sleep(0.05)
                continue
            t_in = now()
            step = len(steps)
            # The schedule follows the samples trained on: t = consumed / (E B) cloud steps
            # (= the step index while every edge is present; the lockstep schedule's formula).
            factor = 0.5 * (1 + math.cos(math.pi * min(consumed / (e * b), total) / total))
            for group in opt.param_groups:
                group["lr"] = cfg.lr * factor
            opt.zero_grad(set_to_none=True)
            if got:
                x, y = self._batch([m for _, m in got], step)
                with autocast(cfg):
                    loss_sum = F.cross_entropy(ddp(x), y, reduction="sum")
                (loss_sum * (w / n)).backward()
            else:
                loss_sum = self._idle_pass(ddp, net, shape)
            opt.step()
            consumed += n
            t_trained = now()
            total_loss = loss_sum.detach().float().reshape(1).cpu()
            dist.all_reduce(total_loss)
            every = cfg.checkpoint_every
            for i, msg in got:
                need[i] = msg.step + 1
                if every and need[i] % every == 0 and need[i] < total:
                    self._send(i, messages.pack_control({"type": "ack", "next_step": need[i]}))
            steps.append(
                {
                    "step": step,
                    "t_wait": t_wait,
                    "t_in": t_in,
                    "t_trained": t_trained,
                    "wait_s": t_in - t_wait,
                    "bytes_in": sum(m.nbytes for _, m in got),
                    "loss": float(total_loss) / n,
                    "samples": n,
                    "lr": cfg.lr * factor,
                    "consumed": [[i, m.step] for i, m in got],  # [edge, its step]
                    "t1": now(),
                    "cpu_s": cpu_now() - c0,
                }
            )
        return steps

    def _idle_pass(self, ddp, net, shape: tuple) -> torch.Tensor:
        """A forward and backward pass of zero weight (this worker has no message in a step the
        others train on): DDP's all-reduce gets exact zero gradients from it, and the BatchNorm
        statistics it would update are put back. Returns a zero loss."""
        cfg = self.cfg
        saved = [t.detach().clone() for t in net.buffers()]
        x = as_input(torch.zeros(cfg.batch_size, *shape[1:], device=self.device), cfg)
        y = torch.zeros(cfg.batch_size, dtype=torch.int64, device=self.device)
        with autocast(cfg):
            loss_sum = F.cross_entropy(ddp(x), y, reduction="sum")
        (loss_sum * 0.0).backward()
        with torch.no_grad():
            for t, old in zip(net.buffers(), saved, strict=True):
                t.copy_(old)
        return torch.zeros(())

    def _recv_present(self, edge: int, step: int, total: int, timeout: float):
        """Policy ``present``: edge ``edge``'s message of ``step`` (END once ``step == total``),
        or None when its connection failed (it is away from now on: :meth:`_admit_rejoins`)."""
        conn = self.conns.get(edge)
        try:
            if conn is None:
                raise TransferError("its connection was closed earlier")
            msg = conn.recv_msg(timeout=timeout)
        except TransferTimeout:
            raise
        except TransferError as exc:  # closed or reset: the edge is gone
            self._drop(edge)
            self.away[edge] = (now(), str(exc))
            self.log(
                f"edge {edge} dropped ({exc}); the cloud needs its step {step} and trains on the "
                f"other edges meanwhile (up to {self.fcfg.rejoin_timeout:g} s for it to rejoin: "
                f"hierbench fleet --role edge --edge-id {edge} --resume)"
            )
            return None
        if step == total:
            if msg.kind != Kind.END:
                raise ProtocolError(
                    f"edge {edge}: expected END after step {total - 1}, got {msg.kind.name}"
                )
            return msg
        return self._check_step(edge, step, msg)

    def _admit_rejoins(self, need: dict[int, int]) -> None:
        """Policy ``present``: accept the away edges that reconnected meanwhile (never waiting);
        anything else that connects is refused with its reason."""

        def check(hello):
            edge = hello.get("edge") if isinstance(hello, dict) else None
            if edge in self.away and not isinstance(edge, bool):
                return self._check_rejoin(hello, edge, need[edge]), edge
            if any(r["edge"] == edge for r in self.lost):
                return f"edge {edge} was given up after rejoin_timeout", edge
            return f"worker {self.rank} has no edge away with id {edge!r}", edge

        while self.away:
            try:
                got = self._screen(
                    self.lst, 0.0, 10.0, check, " while edges are away", "refused a rejoin"
                )
            except TransferTimeout:
                return
            if got is None:
                continue
            conn, hello, edge = got
            t_lost, why = self.away[edge]
            if self._welcome_back(conn, edge, hello, need[edge], None, why, t_lost):
                del self.away[edge]

    def _give_up(self, need: dict[int, int]) -> None:
        """Policy ``present``: edges away longer than ``rejoin_timeout`` are given up."""
        for edge, (t_lost, why) in list(self.away.items()):
            if now() - t_lost >= self.fcfg.rejoin_timeout:
                del self.away[edge]
                self.lost.append(
                    {"edge": edge, "next_step": need[edge], "why": why, "t_lost": t_lost}
                )
                self.log(
                    f"edge {edge} did not rejoin within {self.fcfg.rejoin_timeout:g} s: given "
                    f"up, without its steps {need[edge]} on"
                )

    # -- edges that drop and rejoin ----------------------------------------------------------

    def _recv(self, edge: int, timeout: float, next_step: int, params_step: int | None = None):
        """The next message from ``edge``; if its connection fails (the edge died, the link
        broke), wait for it to rejoin (:meth:`rejoin`) and read from the new connection. A
        silent but open connection is not a drop: ``TransferTimeout`` after ``timeout``."""
        while True:
            conn = self.conns.get(edge)
            why = "its connection was closed earlier"
            if conn is not None:
                try:
                    return conn.recv_msg(timeout=timeout)
                except TransferTimeout:
                    raise
                except TransferError as exc:  # closed or reset: the edge is gone
                    why = str(exc)
            self.rejoin(edge, next_step, params_step, why)

    def _send(self, edge: int, data: bytes) -> None:
        """Send to ``edge``; a failed send is logged, not fatal. The connection is kept: an
        edge that finished closes its side while its last uploads still wait here, and one
        that died shows it at the next receive (which then waits for it to rejoin; what it
        missed is in its welcome)."""
        conn = self.conns.get(edge)
        if conn is None:
            return
        try:
            conn.send(data)
        except TransferError as exc:
            self.log(f"edge {edge}: a send failed ({exc})")

    def _drop(self, edge: int) -> None:
        conn = self.conns.get(edge)
        self.conns[edge] = None
        if conn is not None:
            with contextlib.suppress(BaseException):
                conn.close(timeout=0)

    def rejoin(self, edge: int, next_step: int, params_step: int | None, why: str) -> None:
        """Wait (up to ``rejoin_timeout``) for ``edge`` to connect again, accepting only it.

        The lockstep step waits meanwhile (the other edges keep uploading into their bounded
        backlogs). The new connection must say a valid hello for this edge with this fleet
        config and ``resume`` whose ``acked`` is at most ``next_step`` (its checkpoint can send
        what the cloud needs); anything else is refused, with a reason, and waiting goes on.
        It is welcomed with ``next_step`` (the step the cloud needs next from it),
        ``params_step`` (the FedAvg step whose parameters it waits for, else null) and
        ``last_sync`` (the step of its last FedAvg average, resent right after the welcome: the
        edge may have died before loading it).

        Raises:
            ProcessError: ``rejoin_timeout`` is 0 (a dropped edge stops the cloud).
            TransferTimeout: the edge did not come back in time.
        """
        self._drop(edge)
        t_lost = now()
        timeout = self.fcfg.rejoin_timeout
        if not timeout:
            raise ProcessError(
                f"worker {self.rank}: edge {edge} dropped ({why}) before the cloud had its step "
                f"{next_step}; rejoin_timeout is 0, so the cloud stops"
            )
        self.log(
            f"edge {edge} dropped ({why}); the cloud needs its step {next_step}: waiting up to "
            f"{timeout:g} s for it to rejoin (hierbench fleet --role edge --edge-id {edge} "
            "--resume)"
        )
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransferTimeout(
                    f"worker {self.rank}: edge {edge} dropped ({why}) and did not rejoin within "
                    f"{timeout:g} s (rejoin_timeout); the cloud needs its step {next_step}"
                )
            try:
                got = self._screen(
                    self.lst,
                    left,
                    min(30.0, max(left, 1.0)),
                    lambda h: (self._check_rejoin(h, edge, next_step), edge),
                    f" while edge {edge} is away",
                    "refused a rejoin",
                )
            except TransferTimeout:
                continue
            if got is None:
                continue
            conn, hello, _ = got
            if self._welcome_back(conn, edge, hello, next_step, params_step, why, t_lost):
                return

    def _welcome_back(
        self, conn, edge: int, hello: dict, next_step: int, params_step, why: str, t_lost: float
    ) -> bool:
        """Welcome a rejoining edge (and resend the last FedAvg average); False if it dropped
        again meanwhile (its connection is closed, and it is still away)."""
        last = self.last_avg
        welcome = {
            "type": "welcome",
            "worker": self.rank,
            "next_step": next_step,
            "params_step": params_step,
            "last_sync": None if last is None else last[0],
        }
        resume = hello.get("resume") or {}
        grads = []
        if self.cfg.method == "split":  # the steps it replays from its checkpoint (checked)
            grads = [self.sent_grads[edge][s] for s in range(resume["step"], next_step)]
            welcome["grads_from"] = resume["step"]
        try:
            conn.send(messages.pack_control(welcome))
            if last is not None:
                conn.send(last[1])
            for g in grads:
                conn.send(g)
        except TransferError as exc:
            self.log(f"edge {edge} dropped again while being welcomed: {exc}")
            with contextlib.suppress(BaseException):
                conn.close(timeout=0)
            return False
        self.conns[edge] = conn
        t_back = now()
        self.rejoins.append(
            {
                "edge": edge,
                "next_step": next_step,
                "params_step": params_step,
                "resume": hello.get("resume"),
                "why": why,
                "t_lost": t_lost,
                "t_back": t_back,
                "away_s": t_back - t_lost,
            }
        )
        self.log(f"edge {edge} rejoined; it resumes at step {next_step}")
        return True

    def _check_rejoin(self, hello: dict, edge: int, next_step: int) -> str | None:
        if hello.get("type") != "hello":
            return f"expected hello, got {hello.get('type')!r}"
        got = hello.get("edge")
        if got != edge or isinstance(got, bool):
            if got in self.served and self.conns.get(got) is not None:
                return f"edge {got} is already connected"
            return f"worker {self.rank} is waiting for edge {edge} to rejoin, not edge {got!r}"
        if hello.get("fleet") != self.fcfg.to_dict():
            return "this cloud runs another fleet config (the same settings on every role)"
        if hello.get("steps_per_epoch") != self.spe:
            return f"steps_per_epoch {hello.get('steps_per_epoch')!r}, the run has {self.spe}"
        return self._check_resume(hello, edge, next_step)

    def _recv_step(self, edge: int, step: int, timeout: float):
        return self._check_step(edge, step, self._recv(edge, timeout, next_step=step))

    def _check_step(self, edge: int, step: int, msg):
        """``msg`` if it is ``edge``'s upload of ``step`` with valid labels; else ProtocolError."""
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
            msg = self._recv(i, timeout, next_step=step + 1, params_step=step)
            rows[i] = wire.unpack_params(msg, step, n_params)
        rows = rows.to(self.device)
        dist.all_reduce(rows)  # one non-zero contribution per row: exact
        rows = rows.cpu()
        avg = rows[0].clone()
        for r in rows[1:]:
            avg += r
        avg /= self.fcfg.edges
        reply = wire.pack_params(step, avg)
        self.last_avg = (step, reply)  # resent to an edge that rejoins (it may have lost it)
        for i in self.served:
            self._send(i, reply)


def _hang_up(conn, why: str, log) -> None:
    """Log why a connection is dropped and close it at once (it may already be broken)."""
    log(why)
    with contextlib.suppress(BaseException):
        conn.close(timeout=0)


def _refuse(conn, problem: str, log, what: str) -> None:
    """Log and tell a connection why it is refused (a welcome carrying the error), then close."""
    log(f"{what}: {problem}")
    with contextlib.suppress(BaseException):
        conn.send(messages.pack_control({"type": "welcome", "error": problem}))
        conn.close(timeout=2.0)
