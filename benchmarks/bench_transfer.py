"""The transfer engine, in real time: pacing accuracy, overlap, overhead, peak throughput.

Each benchmark states its anchor in the same run (``extra_info``):
* goodput: the configured link rate (``goodput_ratio`` = end-to-end goodput / rate, target
  >= 0.97), end to end from the first ``send`` to the last ``recv``;
* overlap: ``max(t_c, t_l)`` for a producer computing ``t_c`` into each slot over a link taking
  ``t_l`` per message (target period <= 1.05 max with 2 slots, against ~ t_c + t_l with 1);
* per-message overhead: microseconds per tiny message on an unshaped link;
* peak throughput: a memcpy of the same bytes (``benchmarks/anchors.py``);
* kernel-shaped (root only): the same transfer through ``tc tbf`` beside the engine's bucket.

``tcp-mac`` is TCP with every frame authenticated (HMAC-SHA256, as off loopback): its goodput at
1 Gbit/s is the cost of authentication (target >= 0.97 of the rate, as for the others).

    python -m pytest benchmarks/bench_transfer.py --bench-save transfer  # results/bench/...
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from benchmarks.anchors import time_median
from hierbench.transfer import Link, connect, inprocess_pair, listen, netns

SECRET = b"benchmark secret, 16+ bytes"
T = 120.0
# tcp-mac: TCP with every frame authenticated (HMAC-SHA256), as off loopback
TRANSPORTS = ["inprocess", "tcp", "tcp-mac"]


def make_pair(transport: str, link: Link, **opts):
    """(sender, receiver) joined by the given transport on loopback."""
    if transport == "inprocess":
        return inprocess_pair(link, **opts)
    macs = transport == "tcp-mac"
    with listen(port=0, secret=SECRET, link=link, **opts) as lst, ThreadPoolExecutor(1) as ex:
        fut = ex.submit(lst.accept, timeout=T)
        client = connect(
            "127.0.0.1", lst.port, SECRET, link=link, timeout=T, frame_macs=macs, **opts
        )
        server = fut.result(T)
    assert ("frames authenticated" in repr(server)) == macs
    return client, server


def stream(a, b, payload, count: int, *, copy: bool = True) -> float:
    """Wall seconds to push ``count`` messages from a to b, a consumer thread draining b."""
    go = threading.Event()

    def consume():
        go.wait()
        for _ in range(count):
            b.recv(timeout=T, copy=copy).release()

    th = threading.Thread(target=consume)
    th.start()
    t0 = time.perf_counter()
    go.set()
    for _ in range(count):
        a.send(payload, timeout=T)
    th.join()
    return time.perf_counter() - t0


# Message sizes and counts for ~1 s of link time per round at each rate.
RATES = {1: (32_768, 4), 10: (125_000, 10), 100: (625_000, 20), 1000: (2_500_000, 50)}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mbit", list(RATES))
def test_goodput_vs_configured_rate(benchmark, transport, mbit):
    rate = mbit * 1e6
    nbytes, count = RATES[mbit]
    a, b = make_pair(transport, Link(rate))
    payload = bytes(nbytes)
    with a, b:
        benchmark.group = f"transfer/goodput/{transport}"
        benchmark.pedantic(stream, args=(a, b, payload, count), rounds=2, iterations=1)
        wall = benchmark.stats.stats.median
        st_a, st_b = a.stats(), b.stats()
    goodput = nbytes * count * 8 / wall
    benchmark.extra_info.update(
        configured_bps=rate,
        bytes_per_round=nbytes * count,
        goodput_bps=goodput,
        goodput_ratio=goodput / rate,
        engine_send_goodput_ratio=st_a.goodput_bps / rate,
        engine_recv_goodput_ratio=st_b.recv_goodput_bps / rate,
        link_busy_fraction=st_a.link_busy_fraction,
    )


OVERLAP = [(0.030, 0.020), (0.020, 0.030), (0.025, 0.025)]  # (t_c, t_l) seconds


@pytest.mark.parametrize("slots", [2, 1])
@pytest.mark.parametrize(("t_c", "t_l"), OVERLAP)
def test_overlap_compute_and_link(benchmark, t_c, t_l, slots):
    rate, count = 80e6, 14
    nbytes = int(t_l * rate / 8)
    a, b = inprocess_pair(Link(rate), slots=slots, recv_slots=4)

    def run():
        drain = threading.Thread(target=lambda: [b.recv(timeout=T) for _ in range(count)])
        drain.start()
        for _ in range(count):
            with a.acquire(nbytes, timeout=T) as slot:
                time.sleep(t_c)  # the producer's compute, written straight into the slot
                slot.commit()
        drain.join()
        ends = [r.tx_end_ns for r in a.records(clear=True) if r.direction == "sent"]
        b.records(clear=True)
        diffs = [(y - x) * 1e-9 for x, y in itertools.pairwise(ends[1:])]  # skip the warm-up
        return statistics.median(diffs)

    with a, b:
        benchmark.group = "transfer/overlap"
        periods = []
        benchmark.pedantic(lambda: periods.append(run()), rounds=2, iterations=1)
    period = statistics.median(periods)
    benchmark.extra_info.update(
        t_c=t_c,
        t_l=t_l,
        slots=slots,
        period_s=period,
        anchor_max_s=max(t_c, t_l),
        anchor_sum_s=t_c + t_l,
        period_over_max=period / max(t_c, t_l),
        period_over_sum=period / (t_c + t_l),
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_per_message_overhead(benchmark, transport):
    count = 2000
    a, b = make_pair(transport, Link())
    payload = bytes(64)
    with a, b:
        benchmark.group = "transfer/overhead"
        benchmark.pedantic(stream, args=(a, b, payload, count), rounds=3, iterations=1)
    benchmark.extra_info.update(
        message_bytes=64,
        messages=count,
        per_message_us=benchmark.stats.stats.median / count * 1e6,
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_peak_throughput(benchmark, transport):
    """Unshaped, large messages sent from a tensor (no copy into the send slot) and received
    without copying out: in process that leaves one memcpy per message (into the receive slot);
    over TCP the kernel's two copies through loopback plus the CRC32C of each byte."""
    nbytes, count = 8 << 20, 24
    a, b = make_pair(transport, Link(), slot_bytes=nbytes)
    payload = torch.empty(nbytes, dtype=torch.uint8).random_(0, 255)
    with a, b:
        benchmark.group = "transfer/peak"
        benchmark.pedantic(
            stream, args=(a, b, payload, count), kwargs={"copy": False}, rounds=3, iterations=1
        )
    moved = nbytes * count
    wall = benchmark.stats.stats.median
    copy_s = single_thread_memcpy_s(nbytes) * count
    benchmark.extra_info.update(
        bytes=moved,
        gbps=moved / wall / 1e9,
        memcpy_gbps=moved / copy_s / 1e9,
        memcpy_ratio=copy_s / wall,
        memcpy_threads=1,
    )


def single_thread_memcpy_s(nbytes: int) -> float:
    """The anchor: a one-thread copy of the same bytes (the engine copies on one thread; torch's
    multi-threaded copy_ was 20x slower than one thread on the loaded 2-core reference VM)."""
    src = torch.empty(nbytes, dtype=torch.uint8).random_(0, 255)
    dst = torch.empty_like(src)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return time_median(lambda: dst.copy_(src), repeat=9)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.netns
@pytest.mark.parametrize("mbit", [10, 100])
def test_kernel_shaped_beside_token_bucket(benchmark, mbit):
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(f"kernel-shaped mode unavailable: {reason}")
    rate = mbit * 1e6
    nbytes, count = (250_000, 6) if mbit == 10 else (1_000_000, 15)
    out = {}
    benchmark.group = "transfer/tc-vs-bucket"
    benchmark.pedantic(
        lambda: out.update(netns.compare(rate, nbytes=nbytes, count=count)), rounds=1
    )
    benchmark.extra_info.update(
        configured_bps=rate,
        burst_bytes=out["burst_bytes"],
        emulator_goodput_ratio=out["emulator"]["goodput_bps"] / rate,
        tc_goodput_ratio=out["tc"]["goodput_bps"] / rate,
        tc_over_emulator=out["tc_over_emulator"],
        emulator_first_message_s=out["emulator"]["first_message_latency_s"],
        tc_first_message_s=out["tc"]["first_message_latency_s"],
        ideal_first_message_s=nbytes * 8 / rate,
        qdisc=out["qdisc"],
    )
