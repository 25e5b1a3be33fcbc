"""The fleet on loopback with real processes: E edge processes, a W-worker gloo cloud job started
by torch's elastic launcher, real CIFAR-10 shards, real TCP. Each run is held to the one-process
oracle (:mod:`hierbench.fleet.oracle`), which shares no code with the roles but model building.

Exactness. Edge models: independent edges compute exactly what the oracle's edges compute (same
ops, same data, one thread each), and FedAvg's average is made bit-identical on purpose (each
row of the all-reduced (E, P) tensor has one non-zero contribution; the rows are summed in edge
order, as in the oracle). The cloud model is not bit-exact *by construction*: DDP all-reduces
the W workers' gradients and divides by W where the oracle accumulates the workers' backward
passes in one process, and each worker scales its loss by W / (E B) where the oracle scales by
1 / (E B). But for the W tested here (1 and 2) the two are the same floating-point operations:
scaling by 2 and dividing by 2 are exact in binary floating point, and a sum of two gradients
is the same in either order (the ring's and the oracle's), so with the oracle on the roles'
thread count (one) the cloud replicas, too, equal the oracle bit for bit, and the tests say so
with ``torch.equal``. For W >= 3 the all-reduce adds three or more terms in the ring's order,
not the oracle's: equal only to rounding, and rounding is amplified here (BatchNorm over 4-8
samples of 2x2 maps): the oracle run on 2 threads instead of 1 differed from the 1-thread
result by up to 2 % of the parameters' movement after 4 steps. The W >= 3 test (3 edges, 3
workers, 2 steps) is in ``test_cloud_scaleout.py``, with its tolerance and why.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hierbench.errors import ConfigError
from hierbench.fleet.config import FleetConfig, parse_edge_sync
from hierbench.fleet.oracle import train_fleet_plain
from hierbench.fleet.record import check_fleet_record
from hierbench.methods import RunConfig

REPO = Path(__file__).resolve().parents[2]


def run_cfg(cifar10_root, **kw) -> RunConfig:
    base = dict(
        method="hierarchical",
        dataset="cifar10",
        data_root=str(cifar10_root),
        limit_per_class=4,
        batch_size=4,
        epochs=1,
        batches_per_epoch=3,
        link=None,
        eval="none",
        model="resnet18",
        stem="imagenet",
        cut="layer2",
        augment=True,
        codec="fp32",
        lr=0.05,
    )
    base.update(kw)
    return RunConfig(**base)


def _cli(fcfg: FleetConfig, run_dir: Path, *extra: str, timeout: float = 120.0):
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_file = run_dir.parent / f"{run_dir.name}-fleet.json"
    cfg_file.write_text(json.dumps(fcfg.to_dict()))
    cmd = [sys.executable, "-m", "hierbench.cli", "fleet", "--config", str(cfg_file)]
    cmd += ["--run-dir", str(run_dir), *extra]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def run_fleet_cli(fcfg: FleetConfig, run_dir: Path) -> dict:
    t0 = time.perf_counter()
    res = _cli(fcfg, run_dir, "--save-state")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    text = (run_dir / "record.json").read_text()

    def no_constants(name):
        raise AssertionError(f"record is not strict JSON: {name}")

    record = json.loads(text, parse_constant=no_constants)
    record["_wall"] = time.perf_counter() - t0
    return check_fleet_record(record)


def _load(path: Path):
    return torch.load(path, weights_only=True)


def _assert_equal(name, got, want):
    assert got.shape == want.shape and got.dtype == want.dtype, name
    assert torch.equal(got, want), f"{name}: max diff {(got - want).abs().max():.3e}"


def _assert_moved(name, want, init):
    """Training changed the tensor (else equality would say nothing)."""
    assert not torch.equal(want, init), f"{name}: training did not change it"


def check_against_oracle(fcfg: FleetConfig, run_dir: Path, record: dict) -> None:
    oracle = train_fleet_plain(fcfg)
    cfg = fcfg.run
    # Cloud: every replica's parameters; rank 0's buffers (DDP broadcasts rank 0's buffers).
    want = oracle["cloud"].state_dict()
    params = dict(oracle["cloud"].named_parameters())
    assert fcfg.workers <= 2, "W >= 3: equal only to rounding (test_cloud_scaleout.py)"
    for name in params:
        _assert_moved(f"cloud {name}", want[name], oracle["cloud_init"][name])
    for w in range(fcfg.workers):
        got = _load(run_dir / f"cloud-{w}.pt")
        assert set(got) == set(want)
        for name, t in want.items():
            if w == 0 or name in params:  # buffers: rank 0's (DDP broadcasts them)
                _assert_equal(f"cloud-{w} {name}", got[name], t)
    # Edges: bit for bit.
    if cfg.method != "cloud_only":
        for i, (edge, head) in enumerate(oracle["edges"]):
            got = _load(run_dir / f"edge-{i}.pt")
            for part, module in (("edge", edge), ("head", head)):
                if module is None:  # split learning: no exit
                    assert got[part] is None
                    continue
                for name, t in module.state_dict().items():
                    _assert_equal(f"edge-{i} {part}.{name}", got[part][name], t)
    # The record's losses are the same math.
    for i, e in enumerate(record["edges"]):
        exits = [r["loss"] for r in e["steps"]]
        if cfg.method == "hierarchical":
            assert exits == [loss[0][i] for loss in oracle["losses"]]
    # The record's cloud loss: an all-reduced float32 sum vs the oracle's float64 sum of items.
    cloud_losses = [r["loss"] for r in record["workers"][0]["steps"]]
    assert cloud_losses == pytest.approx([loss[1] for loss in oracle["losses"]], rel=1e-6)
    if cfg.eval == "end":
        check_eval_against_oracle(fcfg, record, oracle)


@torch.no_grad()
def check_eval_against_oracle(fcfg: FleetConfig, record: dict, oracle: dict) -> None:
    """The record's test accuracies are the oracle's models' on the same images (fp32 codec:
    lossless), counted here by hand: per edge its layers then the cloud, and its exit."""
    from hierbench.data import load_dataset, normalize
    from hierbench.methods.parts import NORMALIZATION

    cfg = fcfg.run
    ev = record["eval"]
    test = load_dataset(cfg.dataset, "test", cfg.data_root).subset(cfg.eval_samples, seed=cfg.seed)
    x = normalize(test.images, *NORMALIZATION[cfg.dataset])
    cloud = oracle["cloud"].eval()
    assert ev["eval_samples"] == cfg.eval_samples and len(ev["per_edge"]) == fcfg.edges
    for i, (edge, head) in enumerate(oracle["edges"]):
        edge.eval()
        act = edge(x)
        final = float((cloud(act).argmax(1) == test.labels).float().mean())
        got = ev["per_edge"][i]
        # one image's worth: a near-tie of two logits may round either way on other threads
        assert got["final_acc"] == pytest.approx(final, abs=1.01 / len(test))
        if head is None:  # split learning: no exit
            assert got["exit_acc"] is None
            continue
        head.eval()
        exit_ = float((head(act).argmax(1) == test.labels).float().mean())
        assert got["exit_acc"] == pytest.approx(exit_, abs=1.01 / len(test))
    assert ev["final_acc"] == pytest.approx(
        sum(p["final_acc"] for p in ev["per_edge"]) / fcfg.edges
    )


def check_record(record: dict, fcfg: FleetConfig) -> None:
    cfg = fcfg.run
    t = record["totals"]
    spe = record["edges"][0]["steps_per_epoch"]
    assert t["steps"] == spe * cfg.epochs
    assert t["samples"] == t["steps"] * fcfg.edges * cfg.batch_size
    assert t["train_wall_s"] > 0 and t["samples_per_s"] > 0
    first = min(r["t0"] for e in record["edges"] for r in e["steps"])
    roles = [*record["edges"], *record["workers"]]
    assert t["train_wall_s"] == max(r["t1"] for x in roles for r in x["steps"]) - first
    assert record["config"] == fcfg.to_dict()
    assert record["policy"]["name"] == "lockstep" and "all-reduced" in record["policy"]["text"]
    assert record["partition"]["sizes"] and sum(record["partition"]["sizes"]) == 40
    env = record["environment"]
    assert len(env["git_sha"]) == 40 and env["git_dirty"] in (True, False)
    assert [e["edge"] for e in record["edges"]] == list(range(fcfg.edges))
    for e in record["edges"]:
        assert e["worker"] == e["edge"] % fcfg.workers
        assert len(e["steps"]) == t["steps"]
        assert all(r["t1"] >= r["t0"] for r in e["steps"])
    for w in record["workers"]:
        assert w["served"] == fcfg.served(w["worker"])
        assert w["backend"] == "gloo"
        assert [r["step"] for r in w["steps"]] == list(range(t["steps"]))
        assert all(r["t1"] >= r["t_trained"] >= r["t_in"] >= r["t_wait"] for r in w["steps"])
        syncs = [r["step"] for r in w["steps"] if "t_sync" in r]
        assert syncs == [s for s in range(t["steps"]) if fcfg.syncs_after(s)]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("edge_sync", "batches"),
    [("none", 3), ("fedavg:2", 4)],
    ids=["independent", "fedavg"],
)
def test_two_edges_two_workers_train_the_oracles_math(cifar10_root, tmp_path, edge_sync, batches):
    """2 edge processes + 2 gloo workers (elastic launcher) over loopback TCP: the cloud
    replicas equal the oracle's cloud to rounding, the edges equal it bit for bit; with
    fedavg:2 the edges are averaged after steps 1 and 3 (the last) and so end identical."""
    fcfg = FleetConfig(
        run=run_cfg(cifar10_root, batches_per_epoch=batches, eval="end", eval_samples=96),
        edges=2,
        workers=2,
        edge_sync=edge_sync,
    )
    record = run_fleet_cli(fcfg, tmp_path / "run")
    check_record(record, fcfg)
    check_against_oracle(fcfg, tmp_path / "run", record)
    e0, e1 = (_load(tmp_path / "run" / f"edge-{i}.pt") for i in range(2))
    same = all(torch.equal(e0["edge"][k], e1["edge"][k]) for k in e0["edge"])
    assert same == (edge_sync != "none")  # independent edges on different shards differ
    if edge_sync != "none":
        waits = [r for e in record["edges"] for r in e["steps"] if "sync_wait_s" in r]
        assert len(waits) == 2 * 2


@pytest.mark.slow
def test_split_learning_two_edges_two_workers_fedavg_trains_the_oracles_math(
    cifar10_root, tmp_path
):
    """SplitFed on loopback: 2 edges send activations and wait for their gradients (each edge's
    own mean loss, the cloud's all-reduced update), their edge layers averaged after steps 1
    and 3: edges and cloud replicas equal the oracle bit for bit, evaluation included."""
    fcfg = FleetConfig(
        run=run_cfg(cifar10_root, method="split", batches_per_epoch=4, eval="end", eval_samples=64),
        edges=2,
        workers=2,
        edge_sync="fedavg:2",
    )
    record = run_fleet_cli(fcfg, tmp_path / "run")
    check_record(record, fcfg)
    check_against_oracle(fcfg, tmp_path / "run", record)
    for e in record["edges"]:
        assert all(r["loss"] is None and r["grad_wait_s"] >= 0 for r in e["steps"])
    assert all(p["exit_acc"] is None for p in record["eval"]["per_edge"])
    e0, e1 = (_load(tmp_path / "run" / f"edge-{i}.pt") for i in range(2))
    assert all(torch.equal(e0["edge"][k], e1["edge"][k]) for k in e0["edge"])  # averaged last


@pytest.mark.slow
def test_one_edge_one_worker_by_hand_q8_dirichlet(cifar10_root, tmp_path):
    """1 edge + 1 worker started as a multi-machine run is (``--role cloud --listen``, ``--role
    edge --connect``, the secret in the environment, then ``--role merge``), with the 8-bit codec
    (deterministic: round to nearest) and a Dirichlet partition of one edge: the oracle's math."""
    fcfg = FleetConfig(
        run=run_cfg(cifar10_root, codec="q8", batch_size=8),
        edges=1,
        workers=1,
        partition="dirichlet:0.5",
    )
    run_dir = tmp_path / "run"
    cfg_file = tmp_path / "fleet.json"
    cfg_file.write_text(json.dumps(fcfg.to_dict()))
    env = dict(os.environ, PYTHONPATH=str(REPO), HIERBENCH_SECRET="by-hand-secret-0123456789abcdef")
    base = [sys.executable, "-m", "hierbench.cli", "fleet", "--config", str(cfg_file)]
    base += ["--run-dir", str(run_dir), "--save-state"]
    cloud = subprocess.Popen(
        [*base, "--role", "cloud", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        line = ""
        while "listening on" not in line:  # the cloud prints every worker's address
            line = cloud.stdout.readline()
            assert line, "the cloud role exited before listening"
        address = line.strip().rpartition(" ")[2]
        edge = subprocess.run(
            [*base, "--role", "edge", "--edge-id", "0", "--connect", address],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=REPO,
        )
        assert edge.returncode == 0, edge.stderr[-3000:]
        out, _ = cloud.communicate(timeout=120)
        assert cloud.returncode == 0, out[-3000:]
    finally:
        if cloud.poll() is None:
            cloud.kill()
            cloud.wait()
    merge = subprocess.run(
        [*base, "--role", "merge"], capture_output=True, text=True, timeout=60, env=env, cwd=REPO
    )
    assert merge.returncode == 0, merge.stderr[-3000:]
    record = check_fleet_record(json.loads((run_dir / "record.json").read_text()))
    check_record(record, fcfg)
    check_against_oracle(fcfg, run_dir, record)


@pytest.mark.slow
def test_three_edges_two_workers_cloud_only(cifar10_root, tmp_path):
    """W does not divide E (worker 0 serves edges 0 and 2, worker 1 edge 1): the loss scaling
    keeps the update the mean over all 3 x B samples. Cloud-only: raw batches up."""
    fcfg = FleetConfig(
        run=run_cfg(cifar10_root, method="cloud_only", batches_per_epoch=2),
        edges=3,
        workers=2,
        partition="dirichlet:1",
    )
    record = run_fleet_cli(fcfg, tmp_path / "run")
    check_record(record, fcfg)
    check_against_oracle(fcfg, tmp_path / "run", record)
    assert record["workers"][0]["served"] == [0, 2] and record["workers"][1]["served"] == [1]


@pytest.mark.slow
def test_a_shared_ingress_paces_the_fleet_and_changes_no_math(cifar10_root, tmp_path):
    """2 edges with unshaped uplinks share one 2 Mbit/s ingress (the bucket file in the run
    folder): every uploaded byte passes it, so the run lasts at least all uploads' bytes at
    that rate, the edges record the time the ingress held them back, and the math is still
    the oracle's (the ingress only paces)."""
    rate = 2e6
    fcfg = FleetConfig(
        run=run_cfg(cifar10_root, batches_per_epoch=3), edges=2, workers=1, ingress="2mbit"
    )
    record = run_fleet_cli(fcfg, tmp_path / "run")
    check_record(record, fcfg)
    check_against_oracle(fcfg, tmp_path / "run", record)
    t = record["totals"]
    # the bucket starts empty of credit (burst 0): its last byte passes >= 8 bytes / R after the
    # first; the first upload starts after the first edge step began
    assert t["train_wall_s"] >= 8 * t["bytes_up"] / rate
    # with unshaped own links every byte waits for the ingress alone: each edge's wait is at
    # least its own uploads' bytes at the ingress rate (more where the other edge was ahead)
    for e in record["edges"]:
        assert e["ingress_wait_s"] >= 0.99 * 8 * e["totals"]["bytes_up"] / rate
    assert (tmp_path / "run" / "ingress.bucket").is_file()


# -- bad settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(edges=2, workers=3), "3 cloud workers for 2 edges"),
        (dict(edges=0), "edges must be an integer >= 1"),
        (dict(workers=0), "workers must be an integer >= 1"),
        (dict(edge_sync="fedavg"), "unknown edge_sync"),
        (dict(edge_sync="fedavg:0"), "K must be an integer >= 1"),
        (dict(edge_sync="fedavg:x"), "K must be an integer >= 1"),
        (dict(edge_sync="sometimes"), "unknown edge_sync"),
        (dict(partition="dirichlet:0"), "ALPHA must be"),
        (dict(policy="next-arrivals"), "unknown policy"),
        (dict(ingress=5e6), "ingress must be a rate string"),
        (dict(ingress="fast"), "ingress 'fast' is not a rate"),
        (dict(ingress="0mbit"), "ingress '0mbit' is not a rate"),
        (dict(ingress="inf"), "finite and > 0"),
    ],
)
def test_bad_fleet_settings(cifar10_root, kw, match):
    with pytest.raises(ConfigError, match=match):
        FleetConfig(run=run_cfg(cifar10_root), **kw)


def test_bad_method_combinations(cifar10_root):
    with pytest.raises(ConfigError, match="policy 'present'"):
        FleetConfig(run=run_cfg(cifar10_root, method="split"), policy="present")
    with pytest.raises(ConfigError, match="cloud_only has none"):
        FleetConfig(run=run_cfg(cifar10_root, method="cloud_only"), edge_sync="fedavg:2")
    with pytest.raises(ConfigError, match="per-epoch evaluation"):
        FleetConfig(run=run_cfg(cifar10_root, eval="epoch"))


def test_edge_sync_grammar_and_assignment(cifar10_root):
    assert parse_edge_sync("none") == 0 and parse_edge_sync("fedavg:5") == 5
    fcfg = FleetConfig(run=run_cfg(cifar10_root), edges=5, workers=2, edge_sync="fedavg:2")
    assert fcfg.served(0) == [0, 2, 4] and fcfg.served(1) == [1, 3]
    assert [fcfg.syncs_after(s) for s in range(4)] == [False, True, False, True]
    assert FleetConfig.from_dict(json.loads(json.dumps(fcfg.to_dict()))) == fcfg


def test_cli_refuses_bad_settings_clearly(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    base = [sys.executable, "-m", "hierbench.cli", "fleet", "--run-dir", str(tmp_path)]
    res = subprocess.run(
        [*base, "--edges", "2", "--workers", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "error: 3 cloud workers for 2 edges" in res.stderr
    assert "Traceback" not in res.stderr


def test_not_a_finite_loss_is_null_in_the_record(tmp_path):
    from hierbench.fleet.record import write_json

    path = write_json(tmp_path / "r.json", {"a": [1.0, math.nan, math.inf]})
    assert json.loads(path.read_text()) == {"a": [1.0, None, None]}


def test_a_worker_refuses_bad_edges_and_keeps_accepting(cifar10_root):
    """Real TCP: garbage after the handshake, an edge this worker does not serve, another
    config, a duplicate edge: each is refused (with a reason where it sent a hello) and the
    worker goes on accepting until its own edges are connected."""
    import socket
    import threading

    from hierbench import transfer
    from hierbench.errors import TransferError
    from hierbench.fleet.wire import Conn
    from hierbench.fleet.worker import CloudWorker
    from hierbench.methods.messages import pack_control

    fcfg = FleetConfig(run=run_cfg(cifar10_root), edges=4, workers=2)
    other = FleetConfig(run=run_cfg(cifar10_root, lr=0.1), edges=4, workers=2)
    secret = b"fleet-test-secret-0123456789"
    worker = CloudWorker(fcfg, rank=1, world=2, device=torch.device("cpu"))  # serves edges 1 and 3

    def hello(edge, cfg=fcfg):
        return pack_control(
            {"type": "hello", "edge": edge, "fleet": cfg.to_dict(), "steps_per_epoch": 3}
        )

    with transfer.listen("127.0.0.1", 0, secret, on_reject=lambda why: None) as lst:
        out: dict = {}
        t = threading.Thread(target=lambda: out.update(hellos=worker.accept_edges(lst, 60)))
        t.start()
        with socket.create_connection((lst.host, lst.port)) as s:  # a stranger: no handshake
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        replies, accepted = [], []
        msgs = (b"garbage", hello(0), hello(1, other), hello(1), hello(1), hello(3))
        for i, msg in enumerate(msgs):
            c = Conn(transfer.connect(lst.host, lst.port, secret))
            c.send(msg)
            if i in (3, 5):  # accepted: no reply until every edge is in (the start barrier)
                accepted.append(c)
                replies.append(None)
                continue
            try:
                replies.append(c.recv_json(timeout=20))
            except TransferError as exc:
                replies.append({"closed": str(exc)})
            c.close()
        t.join(timeout=30)
        assert not t.is_alive()
        with pytest.raises(TransferError):  # not welcomed yet
            accepted[0].recv_json(timeout=0.5)
        worker.welcome_all()
        welcomes = [c.recv_json(timeout=20) for c in accepted]
    assert "closed" in replies[0]
    assert "serves edges [1, 3], not edge 0" in replies[1]["error"]
    assert "another fleet config" in replies[2]["error"]
    assert "already connected" in replies[4]["error"]
    assert welcomes == [{"type": "welcome", "worker": 1, "next_step": 0}] * 2
    assert sorted(out["hellos"]) == [1, 3]
    for c in [*worker.conns.values(), *accepted]:
        c.close()


def test_fleet_help_lists_the_roles(capsys):
    from hierbench.cli import build_parser

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["fleet", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for needle in ("--role", "--edges", "--workers", "--edge-sync", "--partition", "--listen"):
        assert needle in text


# -- an edge that dies and rejoins ---------------------------------------------------------------


def _popen(cmd, env, log: Path):
    with open(log, "w") as f:
        return subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "edge_sync", "every", "delay"),
    [
        ("hierarchical", "none", 2, 0.0),
        ("hierarchical", "fedavg:2", 2, 0.0),
        ("split", "fedavg:2", 2, 0.0),
        ("split", "none", 3, 0.3),
    ],
    ids=["independent", "fedavg", "splitfed", "split-later"],
)
def test_an_edge_killed_mid_run_rejoins_with_no_step_lost(
    cifar10_root, tmp_path, method, edge_sync, every, delay
):
    """2 edges + 2 gloo workers started by hand (as across machines), edges checkpointing every
    2 steps (and after every FedAvg sync: with ``fedavg:2`` the edge waits for the average of
    steps 1, 3 and 5, which a rejoining edge may have missed; split learning: the worker resends
    the gradients of the steps the edge replays). Edge 1 is SIGKILLed ``delay`` s after
    its first checkpoint; the cloud waits for it (edge 0 goes on uploading), the same command
    with ``--resume`` rejoins, resends what the cloud has not consumed, recomputes the rest
    (across the epoch boundary), and the run ends with every cloud replica and both edges equal
    to the uninterrupted oracle bit for bit. Whether the cloud had consumed steps past the
    checkpoint (so that the edge replays them, with resent gradients under split learning)
    depends on when the kill lands; ``split-later`` waits 0.3 s so that it usually has (the
    record says which: ``replayed``), and the cloud's resending is also tested
    deterministically below."""
    import signal

    fcfg = FleetConfig(
        run=run_cfg(
            cifar10_root,
            method=method,
            batches_per_epoch=3,
            epochs=2,
            checkpoint_every=every,
            edge_slowdown=4.0,
        ),
        edges=2,
        workers=2,
        edge_sync=edge_sync,
        rejoin_timeout=90.0,
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg_file = tmp_path / "fleet.json"
    cfg_file.write_text(json.dumps(fcfg.to_dict()))
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        OMP_NUM_THREADS="1",
        HIERBENCH_SECRET="rejoin-test-secret-0123456789abcdef",
    )
    base = [sys.executable, "-m", "hierbench.cli", "fleet", "--config", str(cfg_file)]
    base += ["--run-dir", str(run_dir), "--save-state"]
    edge_cmd = [*base, "--role", "edge", "--connect-file", str(run_dir / "ready.json")]
    cloud = _popen([*base, "--role", "cloud", "--listen", "127.0.0.1:0"], env, tmp_path / "c.log")
    procs = [cloud]
    try:
        e0 = _popen([*edge_cmd, "--edge-id", "0"], env, tmp_path / "e0.log")
        e1 = _popen([*edge_cmd, "--edge-id", "1"], env, tmp_path / "e1.log")
        procs += [e0, e1]
        ckpt = run_dir / "checkpoints" / "edge-1.pt"
        deadline = time.monotonic() + 90
        while not ckpt.exists():
            assert e1.poll() is None, (tmp_path / "e1.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "edge 1 wrote no checkpoint"
            time.sleep(0.02)
        time.sleep(delay)
        e1.send_signal(signal.SIGKILL)
        assert e1.wait(timeout=30) == -signal.SIGKILL
        assert not (run_dir / "edge-1.json").exists()  # it died mid-run
        e1b = _popen([*edge_cmd, "--edge-id", "1", "--resume"], env, tmp_path / "e1b.log")
        procs.append(e1b)
        for p, log in ((e1b, "e1b"), (e0, "e0"), (cloud, "c")):
            assert p.wait(timeout=120) == 0, (tmp_path / f"{log}.log").read_text()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert "edge 1 dropped" in (tmp_path / "c.log").read_text()
    merge = subprocess.run(
        [*base, "--role", "merge"], capture_output=True, text=True, timeout=60, env=env, cwd=REPO
    )
    assert merge.returncode == 0, merge.stderr[-3000:]
    record = check_fleet_record(json.loads((run_dir / "record.json").read_text()))
    check_record(record, fcfg)  # every worker consumed steps 0..5 in order, one per edge
    check_against_oracle(fcfg, run_dir, record)
    w0, w1 = record["workers"]
    assert w0["rejoins"] == [] and len(w1["rejoins"]) == 1
    back = w1["rejoins"][0]
    assert back["edge"] == 1 and 1 <= back["next_step"] <= 6
    c = every  # its first checkpoint (the one it was killed after)
    assert back["resume"] == {"step": c, "acked": back["resume"]["acked"]}
    e1rec = record["edges"][1]
    assert [r["step"] for r in e1rec["steps"]] == list(range(6))
    assert e1rec["resumes"] == [
        {"checkpoint_step": c, "cloud_next_step": back["next_step"], "t": e1rec["resumes"][0]["t"]}
    ]
    replayed = [r["step"] for r in e1rec["steps"] if r.get("replayed")]
    assert replayed == list(range(c, max(c, back["next_step"])))  # consumed before: not resent
    print(f"edge 1 resumed from its checkpoint at {c}; the cloud needed step {back['next_step']}")


def test_a_worker_waits_for_a_dropped_edge_accepts_only_it_and_gives_up_in_time(cifar10_root):
    """Real TCP: while edge 1 is away, its worker refuses another served edge that is still
    connected, another config, edge 1 without --resume, and a checkpoint that cannot send the
    step the cloud needs; then welcomes edge 1 with the step to resume from. Waiting longer
    than rejoin_timeout stops the worker with an error naming the edge."""
    import threading

    from hierbench import transfer
    from hierbench.errors import TransferTimeout
    from hierbench.fleet.wire import Conn
    from hierbench.fleet.worker import CloudWorker
    from hierbench.methods.messages import pack_control

    fcfg = FleetConfig(run=run_cfg(cifar10_root), edges=4, workers=2, rejoin_timeout=30.0)
    other = FleetConfig(run=run_cfg(cifar10_root, lr=0.1), edges=4, workers=2, rejoin_timeout=30)
    secret = b"fleet-test-secret-0123456789"
    worker = CloudWorker(fcfg, rank=1, world=2, device=torch.device("cpu"))  # serves edges 1 and 3
    worker.spe = 3

    def hello(edge, cfg=fcfg, resume=None):
        h = {"type": "hello", "edge": edge, "fleet": cfg.to_dict(), "steps_per_epoch": 3}
        return pack_control(h if resume is None else {**h, "resume": resume})

    ok = {"step": 3, "acked": 1}
    with transfer.listen("127.0.0.1", 0, secret, on_reject=lambda why: None) as lst:
        worker.lst = lst
        worker.conns = {1: None, 3: object()}  # edge 3 is connected
        out: dict = {}
        t = threading.Thread(target=lambda: out.update(r=worker.rejoin(1, 2, None, "test")))
        t.start()
        replies = []
        tries = [
            hello(3, resume=ok),
            hello(1, other, ok),
            hello(1),
            hello(1, resume={"step": 3, "acked": 3}),
            hello(1, resume=ok),
        ]
        for msg in tries:
            c = Conn(transfer.connect(lst.host, lst.port, secret))
            c.send(msg)
            replies.append(c.recv_json(timeout=20))
            c.close()
        t.join(timeout=30)
        assert not t.is_alive()
        assert "edge 3 is already connected" in replies[0]["error"]
        assert "another fleet config" in replies[1]["error"]
        assert "start it with --resume" in replies[2]["error"]
        assert "can send steps from 3 on, but the cloud needs its step 2" in replies[3]["error"]
        assert replies[4] == {
            "type": "welcome",
            "worker": 1,
            "next_step": 2,
            "params_step": None,
            "last_sync": None,
        }
        assert [r["edge"] for r in worker.rejoins] == [1] and worker.conns[1] is not None
        worker.conns[1].close()
        # Nobody comes back: a clear error naming the edge, after rejoin_timeout.
        short = CloudWorker(
            FleetConfig(run=run_cfg(cifar10_root), edges=4, workers=2, rejoin_timeout=0.5),
            rank=1,
            world=2,
            device=torch.device("cpu"),
        )
        short.lst, short.spe = lst, 3
        t0 = time.monotonic()
        with pytest.raises(
            TransferTimeout, match=r"edge 3 dropped .* did not rejoin within 0\.5 s"
        ):
            short.rejoin(3, 2, None, "connection reset")
        assert time.monotonic() - t0 < 10


def test_a_split_worker_resends_the_gradients_a_rejoining_edge_replays(cifar10_root):
    """Split learning, real TCP: the worker keeps each edge's last 2N + 1 gradient messages;
    edge 1 rejoining from its checkpoint at step 2 while the cloud needs step 4 is welcomed
    with ``grads_from: 2`` and then gets exactly the messages of steps 2 and 3; a checkpoint
    older than what the worker kept is refused with the reason."""
    import threading

    from hierbench import transfer
    from hierbench.fleet.wire import Conn
    from hierbench.fleet.worker import CloudWorker
    from hierbench.methods.messages import Kind, pack_control

    fcfg = FleetConfig(
        run=run_cfg(cifar10_root, method="split", checkpoint_every=1),
        edges=2,
        workers=2,
        rejoin_timeout=30.0,
    )
    secret = b"fleet-test-secret-0123456789"
    worker = CloudWorker(fcfg, rank=1, world=2, device=torch.device("cpu"))  # serves edge 1
    worker.spe = 3
    sent = {s: messages_grad(s) for s in range(5)}
    for s, msg in sent.items():
        worker._keep_grad(1, s, msg)
    assert sorted(worker.sent_grads[1]) == [2, 3, 4]  # 2N + 1 = 3 steps kept (N = 1)

    def hello(step, acked):
        h = {"type": "hello", "edge": 1, "fleet": fcfg.to_dict(), "steps_per_epoch": 3}
        return pack_control({**h, "resume": {"step": step, "acked": acked}})

    with transfer.listen("127.0.0.1", 0, secret, on_reject=lambda why: None) as lst:
        worker.lst = lst
        worker.conns = {1: None}
        t = threading.Thread(target=lambda: worker.rejoin(1, 4, None, "test"))
        t.start()
        old = Conn(transfer.connect(lst.host, lst.port, secret))
        old.send(hello(1, 1))
        refused = old.recv_json(timeout=20)
        old.close()
        c = Conn(transfer.connect(lst.host, lst.port, secret))
        c.send(hello(2, 2))
        welcome = c.recv_json(timeout=20)
        got = [c.recv_msg(timeout=20) for _ in range(2)]
        t.join(timeout=30)
        assert not t.is_alive()
        c.close()
    assert (
        "checkpoint is at step 1, but the cloud kept its gradients only from step 2"
        in (refused["error"])
    )
    assert welcome["next_step"] == 4 and welcome["grads_from"] == 2
    assert [(m.kind, m.step) for m in got] == [(Kind.GRAD, 2), (Kind.GRAD, 3)]
    assert [m.payload for m in got] == [grad_payload(2), grad_payload(3)]


def grad_payload(step: int) -> bytes:
    return bytes([step]) * 16


def messages_grad(step: int) -> bytes:
    from hierbench.methods.messages import Kind, RoleMessage, pack

    return pack(RoleMessage(Kind.GRAD, step, 0, None, grad_payload(step)))
