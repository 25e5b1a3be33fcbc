"""The cloud beyond one machine's two workers: a cloud job across nodes, and W >= 3.

A cloud of N nodes is N ``hierbench fleet --role cloud --nnodes N --node-rank n`` processes,
here on one machine (real processes, real TCP on loopback; node 1 listens on 127.0.0.2, which is
loopback too on Linux, so an edge that picked the wrong node's host would find nobody there),
joined by torch's static rendezvous; the edges get one ``--connect`` address per node. The run
is held to the one-process oracle (:mod:`hierbench.fleet.oracle`) bit for bit, as the
single-machine tests in ``test_fleet.py`` are (W = 2: exact by arithmetic, see there).

With W = 3 workers the ring all-reduce sums three gradients in its own order: the replicas
equal the oracle to rounding only, held to a tolerance measured and justified at
:data:`MOVEMENT_RTOL`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hierbench.errors import ConfigError
from hierbench.fleet.config import (
    FleetConfig,
    check_nodes,
    node_of,
    parse_address,
    parse_nodes,
    worker_address,
)
from hierbench.fleet.record import check_fleet_record
from tests.fleet.test_fleet import (
    REPO,
    _popen,
    check_against_oracle,
    check_record,
    run_cfg,
)

HOSTS = ("127.0.0.1", "127.0.0.2")


def _free_ports(count: int, hosts=HOSTS) -> int:
    """A port P such that P .. P + count - 1 can be bound on every host in ``hosts`` now. Drawn
    below the kernel's ephemeral range (32768 on) so that no outgoing connection or gloo's own
    listeners take one of them between this check and the run."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32000 - count)
        socks = []
        try:
            for host in hosts:
                for k in range(count):
                    s = socket.socket()
                    socks.append(s)
                    s.bind((host, base + k))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free run of ports below 32000")


def _env(secret: str = "multinode-test-secret-0123456789abcdef") -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HIERBENCH_SECRET=secret)


def _wait_all(procs: list[tuple[subprocess.Popen, Path]], timeout: float) -> list[int]:
    try:
        return [p.wait(timeout=timeout) for p, _ in procs]
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _cloud_node(base: list[str], run_dir: Path, node: int, listen: str, rdzv: str) -> list[str]:
    return [
        *base,
        "--role",
        "cloud",
        "--run-dir",
        str(run_dir),
        "--listen",
        listen,
        "--nnodes",
        "2",
        "--node-rank",
        str(node),
        "--rdzv-endpoint",
        rdzv,
    ]


def _two_node_run(
    fcfg: FleetConfig,
    tmp_path: Path,
    hosts: tuple[str, str],
    listen: int,
    rdzv: str,
    node_prefix: tuple[list[str], list[str]] = ([], []),
    node_env: tuple[dict, dict] = ({}, {}),
    edge_prefix: list[str] | None = None,
) -> None:
    """Cloud node n (behind ``node_prefix[n]``, e.g. ``ip netns exec NS``, with ``node_env[n]``)
    listens on ``hosts[n]:listen``; the E edges (behind ``edge_prefix``) connect with
    ``--connect hosts[0]:listen,hosts[1]:listen``. Each node writes its parts into its own
    folder; they are collected into ``tmp_path/run`` and merged as across machines; the run is
    checked against the oracle bit for bit and its record's node layout checked."""
    cfg_file = tmp_path / "fleet.json"
    cfg_file.write_text(json.dumps(fcfg.to_dict()))
    base = [sys.executable, "-m", "hierbench.cli", "fleet", "--config", str(cfg_file)]
    base.append("--save-state")
    env = _env()
    run_dir, node_dirs = tmp_path / "run", [tmp_path / "node0", tmp_path / "node1"]
    procs = []
    for n in range(2):
        cmd = _cloud_node(base, node_dirs[n], n, f"{hosts[n]}:{listen}", rdzv)
        log = tmp_path / f"node{n}.log"
        procs.append((_popen([*node_prefix[n], *cmd], {**env, **node_env[n]}, log), log))
    connect = ",".join(f"{h}:{listen}" for h in hosts)
    for i in range(fcfg.edges):
        cmd = [*base, "--role", "edge", "--edge-id", str(i), "--run-dir", str(run_dir)]
        log = tmp_path / f"edge{i}.log"
        procs.append((_popen([*(edge_prefix or []), *cmd, "--connect", connect], env, log), log))
    codes = _wait_all(procs, timeout=240)
    for (_, log), rc in zip(procs, codes, strict=True):
        assert rc == 0, f"{log.name}: {log.read_text()[-3000:]}"
    ready = json.loads((node_dirs[0] / "ready.json").read_text())
    assert ready["workers"] == [[h, listen + w] for w, h in enumerate(hosts)]
    assert ready["nodes"] == 2 and not (node_dirs[1] / "ready.json").exists()
    # Collected as from two machines: node n holds worker n's part and replica.
    shutil.copy(node_dirs[0] / "fleet.json", run_dir / "fleet.json")
    for n in range(2):
        for name in (f"worker-{n}.json", f"cloud-{n}.pt"):
            shutil.copy(node_dirs[n] / name, run_dir / name)
    merge = subprocess.run(
        [*base, "--run-dir", str(run_dir), "--role", "merge"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )
    assert merge.returncode == 0, merge.stderr[-3000:]
    assert "node 1" in merge.stdout
    record = check_fleet_record(json.loads((run_dir / "record.json").read_text()))
    check_record(record, fcfg)
    check_against_oracle(fcfg, run_dir, record)
    assert record["totals"]["nodes"] == 2
    for w, part in enumerate(record["workers"]):
        assert (part["node"], part["nodes"], part["local_rank"]) == (w, 2, 0)
        assert part["listen"] == [hosts[w], listen + w]
        assert part["hostname"] == socket.gethostname()


@pytest.mark.slow
def test_a_cloud_of_two_nodes_trains_the_oracles_math(cifar10_root, tmp_path):
    """Two cloud nodes of one gloo worker each (static rendezvous, node 1 on another address)
    and 2 edges started by hand with ``--connect node0,node1``: each node writes its own parts,
    the parts are collected into one folder and merged as across machines, and both cloud
    replicas and both edges equal the oracle bit for bit; the record says which node ran which
    worker."""
    fcfg = FleetConfig(run=run_cfg(cifar10_root, batches_per_epoch=3), edges=2, workers=2)
    listen = _free_ports(fcfg.workers)  # node n's worker w = n listens on listen + w
    rdzv = f"127.0.0.1:{_free_ports(1, HOSTS[:1])}"
    _two_node_run(fcfg, tmp_path, HOSTS, listen, rdzv)


@pytest.mark.slow
@pytest.mark.netns
def test_a_cloud_of_two_nodes_in_two_network_namespaces(cifar10_root, tmp_path):
    """As above, with node 0 and node 1 in two network namespaces joined by a veth pair (two
    addresses, no shared loopback: the rendezvous, the process group and the edges' connections
    to node 1 cross the veth). Each node names its interface to gloo (``GLOO_SOCKET_IFNAME``,
    as on real machines whose hostname does not resolve to the right address). The edges run
    beside node 0. Root only; skipped with the reason otherwise."""
    from hierbench.transfer import netns

    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(f"network namespaces unavailable: {reason}")
    fcfg = FleetConfig(run=run_cfg(cifar10_root, batches_per_epoch=2), edges=2, workers=2)
    with netns.veth_pair() as pair:
        hosts = (pair.addr_a, pair.addr_b)
        _two_node_run(
            fcfg,
            tmp_path,
            hosts,
            listen=7800,  # fresh namespaces: every port is free
            rdzv=f"{pair.addr_a}:29500",
            node_prefix=(pair.exec_prefix("a"), pair.exec_prefix("b")),
            node_env=({"GLOO_SOCKET_IFNAME": pair.dev_a}, {"GLOO_SOCKET_IFNAME": pair.dev_b}),
            edge_prefix=pair.exec_prefix("a"),
        )


@pytest.mark.slow
def test_cloud_nodes_with_different_configs_stop_with_a_clear_error(cifar10_root, tmp_path):
    """Two nodes whose fleet configs differ (another learning rate) meet at the rendezvous and
    stop before accepting any edge, saying so (without the check each node would refuse the
    other's edges as "another fleet config" only once they connect)."""
    env = _env()
    rdzv = f"127.0.0.1:{_free_ports(1, HOSTS[:1])}"
    procs = []
    for n, lr in enumerate((0.05, 0.1)):
        fcfg = FleetConfig(run=run_cfg(cifar10_root, lr=lr), edges=2, workers=2)
        cfg_file = tmp_path / f"fleet{n}.json"
        cfg_file.write_text(json.dumps(fcfg.to_dict()))
        base = [sys.executable, "-m", "hierbench.cli", "fleet", "--config", str(cfg_file)]
        cmd = _cloud_node(base, tmp_path / f"node{n}", n, "127.0.0.1:0", rdzv)
        log = tmp_path / f"node{n}.log"
        procs.append((_popen([*cmd, "--accept-timeout", "60"], env, log), log))
    codes = _wait_all(procs, timeout=120)
    for (_, log), rc in zip(procs, codes, strict=True):
        text = log.read_text()
        assert rc == 2, text[-3000:]
        assert "the cloud's nodes run different fleet configs" in text, text[-3000:]


# -- node layout and addresses (no processes) ---------------------------------------------------


def test_workers_are_laid_out_node_by_node():
    assert [node_of(w, 4, 2) for w in range(4)] == [0, 0, 1, 1]
    assert [node_of(w, 6, 3) for w in range(6)] == [0, 0, 1, 1, 2, 2]
    assert [node_of(w, 3, 1) for w in range(3)] == [0, 0, 0]
    nodes = parse_nodes("10.0.0.1:7800,10.0.0.2:7900", 4)
    assert nodes == [("10.0.0.1", 7800), ("10.0.0.2", 7900)]
    # worker w listens on its node's PORT + w (w: the global rank)
    got = [worker_address(nodes, 4, w) for w in range(4)]
    assert got == [("10.0.0.1", 7800), ("10.0.0.1", 7801), ("10.0.0.2", 7902), ("10.0.0.2", 7903)]
    # one address keeps its meaning: every worker on that host at PORT + w
    one = parse_nodes("cloud:7800", 3)
    assert [worker_address(one, 3, w) for w in range(3)] == [("cloud", 7800 + w) for w in range(3)]
    assert parse_nodes(":7800", 1) == [("127.0.0.1", 7800)]
    assert parse_address("[::1]:29500", "x") == ("[::1]", 29500)


@pytest.mark.parametrize(
    ("spec", "workers", "match"),
    [
        ("a:1,b:1", 3, "lists 2 cloud nodes .* for 3 workers: the number of nodes must divide W"),
        ("a:1,b:1,c:1", 2, "lists 3 cloud nodes"),
        ("a:1,b", 2, r"--connect entry 1 'b': expected HOST:PORT"),
        ("a:1,,b:1", 2, "--connect entry 1 '': expected HOST:PORT"),
        ("a:x", 1, "expected HOST:PORT"),
        ("a:70000", 1, "port in 0..65535"),
        ("a:0", 1, "port 0; give the port of the cloud node's --listen"),
    ],
)
def test_bad_connect_lists(spec, workers, match):
    with pytest.raises(ConfigError, match=match):
        parse_nodes(spec, workers)


@pytest.mark.parametrize(
    ("workers", "nnodes", "rank", "match"),
    [
        (3, 2, 0, "3 cloud workers on 2 nodes: .* must divide W"),
        (2, 4, 0, "2 cloud workers on 4 nodes"),
        (2, 0, 0, "nnodes must be an integer >= 1, got 0"),
        (2, 2, 2, r"node_rank 2 is not in \[0, 2\)"),
        (2, 2, -1, r"node_rank -1 is not in \[0, 2\)"),
        (2, 1, 1, r"node_rank 1 is not in \[0, 1\)"),
    ],
)
def test_bad_node_settings(workers, nnodes, rank, match):
    with pytest.raises(ConfigError, match=match):
        check_nodes(workers, nnodes, rank)


def test_launch_cloud_refuses_bad_nodes_before_starting_anything(cifar10_root, monkeypatch):
    from hierbench.fleet.cloud import launch_cloud

    monkeypatch.delenv("HIERBENCH_SECRET", raising=False)  # the node checks come first
    fcfg = FleetConfig(run=run_cfg(cifar10_root), edges=4, workers=4)
    with pytest.raises(ConfigError, match="4 cloud workers on 3 nodes"):
        launch_cloud(fcfg, nnodes=3, rdzv_endpoint="127.0.0.1:29500")
    with pytest.raises(ConfigError, match="a cloud of 2 nodes needs a rendezvous endpoint"):
        launch_cloud(fcfg, nnodes=2, node_rank=1)
    with pytest.raises(ConfigError, match="rendezvous endpoint 'node0': expected HOST:PORT"):
        launch_cloud(fcfg, nnodes=2, rdzv_endpoint="node0")
    with pytest.raises(ConfigError, match="port 0; every node needs the same fixed port"):
        launch_cloud(fcfg, nnodes=2, rdzv_endpoint="node0:0")
    with pytest.raises(ConfigError, match="shared secret"):  # the settings were fine
        launch_cloud(fcfg, nnodes=2, node_rank=1, rdzv_endpoint="node0:29500")


def test_cli_refuses_bad_node_settings(cifar10_root, tmp_path, monkeypatch, capsys):
    from hierbench.cli import main

    monkeypatch.setenv("HIERBENCH_SECRET", "multinode-cli-secret-0123456789abcdef")
    base = ["fleet", "--data-root", str(cifar10_root), "--run-dir", str(tmp_path)]
    cases = [
        (["--role", "cloud", "--edges", "3", "--workers", "3", "--nnodes", "2"], "on 2 nodes"),
        (["--role", "cloud", "--workers", "2", "--nnodes", "2", "--node-rank", "2"], "node_rank"),
        (["--role", "cloud", "--workers", "2", "--nnodes", "2"], "needs a rendezvous endpoint"),
        (["--role", "edge", "--edge-id", "0", "--nnodes", "2"], "are --role cloud settings"),
        (["--nnodes", "2"], "are --role cloud settings"),
        (
            ["--role", "edge", "--edge-id", "1", "--workers", "2", "--connect", "a:1,b:1,c:1"],
            "lists 3 cloud nodes",
        ),
    ]
    for args, match in cases:
        assert main([*base, *args]) == 2, args
        err = capsys.readouterr().err
        assert "error:" in err and match in err, (args, err)


# -- W >= 3: equal to the oracle to rounding ----------------------------------------------------


#: The W >= 3 tolerance, as a share of how far training moved each cloud tensor (max |error| /
#: max |trained - initial|). Measured on this 2-core machine with the settings below (twice, the
#: same bits): at most 8.4e-5 for the parameters (layer4's BatchNorm weights: BatchNorm over a
#: worker's 4 samples of 1x1 maps amplifies the last-bit differences of the all-reduced
#: gradient), 1.5e-6 for rank 0's running statistics. 1e-3 leaves a factor 12 for
#: other CPUs' kernels; a real error of the math (an edge's gradient lost or doubled, a wrong loss
#: scale, another worker's BatchNorm statistics kept) moves a tensor by a third of its movement
#: or more: hundreds of times the tolerance.
MOVEMENT_RTOL = 1e-3


def _assert_close_to_movement(name: str, got: torch.Tensor, want: torch.Tensor, init) -> None:
    moved = float((want - init).abs().max())
    assert moved > 0, f"{name}: training did not change it"
    torch.testing.assert_close(got, want, rtol=0.0, atol=MOVEMENT_RTOL * moved, msg=name)


@pytest.mark.slow
def test_three_edges_three_workers_equal_the_oracle_to_rounding(cifar10_root, tmp_path):
    """3 edges + 3 gloo workers (2 steps): the ring all-reduce adds the three workers'
    gradients in its own order, so the cloud replicas equal the oracle only to rounding
    (:data:`MOVEMENT_RTOL` says how close, and why); the independent edges never meet the
    all-reduce and stay bit for bit, and so do their exit losses."""
    from hierbench.fleet.oracle import train_fleet_plain
    from tests.fleet.test_fleet import _assert_equal, _load, run_fleet_cli

    fcfg = FleetConfig(run=run_cfg(cifar10_root, batches_per_epoch=2), edges=3, workers=3)
    run_dir = tmp_path / "run"
    record = run_fleet_cli(fcfg, run_dir)
    assert [w["served"] for w in record["workers"]] == [[0], [1], [2]]
    oracle = train_fleet_plain(fcfg)
    want, init = oracle["cloud"].state_dict(), oracle["cloud_init"]
    params = dict(oracle["cloud"].named_parameters())
    replicas = [_load(run_dir / f"cloud-{w}.pt") for w in range(3)]
    for name, t in want.items():
        if name.endswith("num_batches_tracked"):
            _assert_equal(f"cloud-0 {name}", replicas[0][name], t)
        elif name in params:
            for w, got in enumerate(replicas):
                _assert_close_to_movement(f"cloud-{w} {name}", got[name], t, init[name])
        else:  # running statistics: rank 0's (DDP broadcasts rank 0's buffers)
            _assert_close_to_movement(f"cloud-0 {name}", replicas[0][name], t, init[name])
    assert not all(torch.equal(replicas[0][n], want[n]) for n in params)  # rounding is real
    for name in params:  # DDP: every replica applies the same all-reduced update
        assert all(torch.equal(r[name], replicas[0][name]) for r in replicas[1:]), name
    for i, (edge, head) in enumerate(oracle["edges"]):
        got = _load(run_dir / f"edge-{i}.pt")
        for part, module in (("edge", edge), ("head", head)):
            for name, t in module.state_dict().items():
                _assert_equal(f"edge-{i} {part}.{name}", got[part][name], t)
        assert [r["loss"] for r in record["edges"][i]["steps"]] == [
            loss[0][i] for loss in oracle["losses"]
        ]
    cloud_losses = [r["loss"] for r in record["workers"][0]["steps"]]
    assert cloud_losses == pytest.approx([loss[1] for loss in oracle["losses"]], rel=1e-6)
