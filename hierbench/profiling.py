"""Device profiler: per-block training costs of a model on a device, written as a CSV profile.

For one model (VGG-16 or ResNet-18, either stem), one input shape and batch size, on one device
(CPU with a given thread count, or CUDA with synchronisation around every timed region), it
measures, as medians of ``repeats`` after ``warmup`` untimed runs:

- per block: forward (``classifier``: + cross-entropy), backward with and without the gradient
  w.r.t. the block's input, and the SGD step over the block's parameters (momentum 0.9, weight
  decay 5e-4, as PAPER.md's training settings);
- per cut and exit-head kind (``conv``, ``minimal``): the head's forward + loss + backward (input
  gradient included, as it flows into the edge) + step;
- ``t_full``: one whole-model training step (zero_grad, forward, loss, backward, step), the
  cloud-only baseline;
- memory: parameter, buffer and saved-for-backward bytes per block (saved tensors counted with
  ``torch.autograd.graph.saved_tensors_hooks``, deduplicated by storage, parameters excluded), and
  the edge part's peak per cut and head: on CPU an *accounting estimate*::

      raw uint8 batch + Σ_{blocks ≤ cut} (3·params + buffers + saved) + cut output (fp32)
      + head (3·params + saved)           [3·params: values, gradients, momentum]

  (transient backward buffers are not counted), on CUDA *measured*: ``max_memory_allocated``
  over two training steps of a fresh copy of the edge part + head, minus what was allocated
  before;
- per cut and wire (fp32, q8, q4, q2): bytes of one codec frame holding the batch's activations
  (:func:`hierbench.runtime.codec_bytes.encoded_bytes`), and a zstd ratio column left at 1.0.

Inputs are random (normalised-image statistics do not change dense compute time). The profile's
metadata records the device, CPU model, threads, torch version, batch, date, command, the load
average before and after, and ``cpu_share``: the CPU time the profiler got divided by wall time ×
threads. Timings taken while other work competed for the cores are not trustworthy: the profiler
warns when ``cpu_share`` < 0.75 (the load average alone cannot tell other work from the
profiler's own previous runs).

The data format and its torch-free loader live in :mod:`hierbench.runtime.profiles`;
:func:`load_profile` and :func:`write_profile` are re-exported here.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from hierbench import __version__
from hierbench.errors import ConfigError
from hierbench.models import CLASSIFIER, build_model, exit_head, split
from hierbench.runtime.codec_bytes import WIRE_BITS, CodecSetting, encoded_bytes
from hierbench.runtime.profiles import (
    FORMAT,
    HEAD_KINDS,
    BlockProfile,
    Profile,
    load_profile,
    profile_filename,
    write_profile,
)
from hierbench.spec.datasets import DATASET_SHAPES
from hierbench.spec.provenance import cpu_model

__all__ = [
    "OPTIMIZER",
    "cpu_model",
    "default_path",
    "load_profile",
    "measure_profile",
    "write_profile",
]

#: The optimizer every method trains with (PAPER.md, "Conventions").
OPTIMIZER = {"name": "SGD", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}


#: Below this share of its threads' CPU time, a CPU profile is flagged as contended.
CPU_SHARE_WARN = 0.75


def _sgd(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params,
        lr=OPTIMIZER["lr"],
        momentum=OPTIMIZER["momentum"],
        weight_decay=OPTIMIZER["weight_decay"],
    )


def default_path(
    out_dir: str | Path,
    model: str,
    stem: str,
    dataset: str,
    device: str,
    threads: int | None,
    precision: str = "fp32",
) -> Path:
    """``<out_dir>/<profile_filename(...)>``."""
    kind = "cpu" if device == "cpu" else device.split(":")[0]
    return Path(out_dir) / profile_filename(model, stem, dataset, kind, threads, precision)


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@contextlib.contextmanager
def _saved_bytes(exclude: Sequence[torch.Tensor] = ()) -> Iterator[dict]:
    """Count bytes of tensors saved for backward inside the block, one count per storage;
    storages of ``exclude`` (parameters, an input that is accounted elsewhere) are skipped."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[tuple[int, str], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr not in skip:
            seen.setdefault((ptr, str(t.device)), st.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield seen


class _Timer:
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


#: The numeric settings a profile can be measured in; the same names and meaning as
#: ``RunConfig.precision`` (:data:`hierbench.methods.config.PRECISIONS`), so that profiles and
#: timing runs can agree: ``bf16`` = CPU autocast to bfloat16 around forward passes and losses,
#: ``-cl`` = channels_last model and inputs.
PRECISIONS = ("fp32", "fp32-cl", "bf16", "bf16-cl")


def _amp(precision: str, dev: torch.device):
    if precision.startswith("bf16"):
        return torch.autocast(dev.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _time_block(
    block: nn.Module,
    params: list[torch.Tensor],
    x: torch.Tensor,
    labels: torch.Tensor | None,
    timer: _Timer,
    warmup: int,
    repeats: int,
    precision: str = "fp32",
) -> tuple[list[float], list[float], list[float], list[float], int]:
    """Time forward / backward (with and without the input gradient) / step of one block.

    ``labels``: the block ends in the loss (the classifier). Saved-for-backward bytes are
    counted during the first warm-up run (or an extra untimed run if ``warmup == 0``).
    """
    opt = _sgd(params)
    grad_out: torch.Tensor | None = None
    saved = 0

    def run(input_grad: bool, count: bool = False) -> tuple[float, float, float]:
        nonlocal grad_out, saved
        xi = x.detach().requires_grad_(input_grad)
        ctx = _saved_bytes(params) if count else contextlib.nullcontext({})
        t0 = timer.now()
        with ctx as seen, _amp(precision, xi.device):
            y = block(xi)
            out = F.cross_entropy(y, labels) if labels is not None else y
        t1 = timer.now()
        if labels is not None:
            out.backward()
        else:
            if grad_out is None:
                grad_out = torch.randn_like(out)
            out.backward(grad_out)
        t2 = timer.now()
        opt.step()
        t3 = timer.now()
        opt.zero_grad(set_to_none=True)
        if count:
            saved = sum(seen.values())
        return t1 - t0, t2 - t1, t3 - t2

    for w in range(max(warmup, 1)):
        run(True, count=w == 0)
    fwd: list[float] = []
    bwd: list[float] = []
    bwd_no: list[float] = []
    step: list[float] = []
    for _ in range(repeats):
        for input_grad, sink in ((True, bwd), (False, bwd_no)):
            a, b, c = run(input_grad)
            fwd.append(a)
            sink.append(b)
            step.append(c)
    return fwd, bwd, bwd_no, step, saved


def _time_head(
    head: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    timer: _Timer,
    warmup: int,
    repeats: int,
    precision: str = "fp32",
) -> tuple[float, int]:
    """Median seconds of the exit head's forward + loss + backward (into ``x``) + step, and its
    saved-for-backward bytes (``x`` itself excluded: it is the cut output, counted elsewhere)."""
    hp = list(head.parameters())
    opt = _sgd(hp)
    saved = 0
    times = []
    for r in range(max(warmup, 1) + repeats):
        xi = x.detach().requires_grad_(True)
        ctx = _saved_bytes([*hp, xi]) if r == 0 else contextlib.nullcontext({})
        t0 = timer.now()
        with ctx as seen, _amp(precision, xi.device):
            loss = F.cross_entropy(head(xi), labels)
        loss.backward()
        opt.step()
        t1 = timer.now()
        opt.zero_grad(set_to_none=True)
        if r == 0:
            saved = sum(seen.values())
        elif r >= max(warmup, 1):
            times.append(t1 - t0)
    return _median(times), saved


def _time_edge_step(
    blocks: Sequence[nn.Module],
    channels: int,
    num_classes: int,
    kind: str,
    x: torch.Tensor,
    labels: torch.Tensor,
    timer: _Timer,
    warmup: int,
    repeats: int,
    precision: str,
    cl: bool,
    gap: Callable[[float], Any] | None = None,
    gaps: list[tuple[float, float]] | None = None,
) -> float:
    """Median time of one whole edge training step: zero_grad, the edge blocks' forward, the exit
    head's forward and loss, backward through both, one SGD step over both (copies of the blocks:
    the profiled model is left as it was). This is what the per-block sums approximate; the two
    differ where a block's weights no longer sit in cache by the time it runs again. ``gap(t)``,
    if given, runs after every step (untimed), as the run does between its steps."""
    dev = x.device
    edge = nn.Sequential(*(copy.deepcopy(b) for b in blocks)).train()
    head = exit_head(channels, num_classes, kind).to(dev).train()
    if cl:
        head = head.to(memory_format=torch.channels_last)
    opt = _sgd([*edge.parameters(), *head.parameters()])
    times = []
    for r in range(max(warmup, 1) + repeats):
        t0 = timer.now()
        opt.zero_grad(set_to_none=True)
        with _amp(precision, dev):
            loss = F.cross_entropy(head(edge(x)), labels)
        loss.backward()
        opt.step()
        t1 = timer.now()
        if r >= max(warmup, 1):
            times.append(t1 - t0)
        if gap is not None:
            w0, c0 = time.perf_counter(), time.process_time()
            gap(t1 - t0)
            gaps.append((time.perf_counter() - w0, time.process_time() - c0))
    return _median(times)


def measure_profile(
    model: str,
    *,
    stem: str = "imagenet",
    dataset: str = "cifar10",
    num_classes: int | None = None,
    input_size: int | None = None,
    batch: int = 128,
    device: str = "cpu",
    threads: int | None = None,
    warmup: int = 1,
    repeats: int = 3,
    seed: int = 0,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
    precision: str = "fp32",
    edge_cuts: Sequence[str] = (),
    edge_gap: tuple[str, Callable[[float], Any]] | None = None,
    edge_heads: Sequence[str] = HEAD_KINDS,
) -> Profile:
    """Measure a profile (see the module docstring). Nothing is written; see :func:`write_profile`.

    Args:
        model, stem: as for :func:`hierbench.models.build_model`.
        dataset: names the input shape (``cifar10``: 10 classes, 32×32; ``tiny-imagenet``: 200,
            64×64); ``num_classes``/``input_size`` override it (any other dataset needs both).
        batch: samples per batch.
        device: ``"cpu"`` or ``"cuda"`` / ``"cuda:N"``.
        threads: CPU intra-op threads (``torch.set_num_threads``); ``None`` keeps torch's.
        warmup, repeats: untimed runs, then timed runs per measured region (median reported).
        command: recorded in the metadata (default: ``sys.argv``).
        log: progress lines go here (e.g. ``print``); ``None``: silent.
        precision: one of :data:`PRECISIONS` (recorded in the metadata): measure in the numeric
            setting the timed runs use.
        edge_cuts: cuts at which the whole edge step is timed too (metadata ``edge_step_s``,
            :func:`_time_edge_step`): the runtime model then scales that cut's block times to it.
        edge_gap: ``(description, gap)``: ``gap(t)`` runs after each timed whole edge step that
            took ``t`` seconds, as the timed runs do between steps (the edge-slowdown knob keeps
            the core busy ``(k - 1)·t``); recorded as metadata ``edge_step_gap``. With a gap the
            whole edge step takes 1 warm-up and at most 3 timed runs (each is long and steady).
        edge_heads: exit heads for the whole edge step (default both).

    Raises:
        ConfigError: unknown model/stem/dataset, or CUDA asked for without a GPU.
    """
    say = log or (lambda _msg: None)
    if precision not in PRECISIONS:
        raise ConfigError(
            f"unknown precision {precision!r}; valid choices: {', '.join(PRECISIONS)}"
        )
    cl = precision.endswith("-cl")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    if dataset in DATASET_SHAPES:
        k0, s0 = DATASET_SHAPES[dataset]
        num_classes = num_classes or k0
        input_size = input_size or s0
    elif num_classes is None or input_size is None:
        raise ConfigError(
            f"unknown dataset {dataset!r} ({', '.join(DATASET_SHAPES)}): give num_classes "
            "and input_size"
        )
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda asked for, but torch sees no CUDA device")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {device!r}; valid: cpu, cuda[:N]")
    if threads is not None:
        torch.set_num_threads(threads)
    nthreads = torch.get_num_threads()
    load_start = os.getloadavg()
    started = time.perf_counter()
    cpu_started = time.process_time()
    torch.manual_seed(seed)
    net = build_model(model, num_classes, stem=stem, input_size=input_size).to(dev).train()
    if cl:
        net = net.to(memory_format=torch.channels_last)
    timer = _Timer(dev)
    names = list(net.blocks)
    labels = torch.randint(0, num_classes, (batch,), device=dev)
    x = torch.randn(batch, 3, input_size, input_size, device=dev)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    inputs = [x]
    with torch.no_grad(), _amp(precision, dev):
        for name in names[:-1]:
            inputs.append(net.blocks[name](inputs[-1]).detach())

    rows: list[dict[str, Any]] = []
    for i, name in enumerate(names):
        block = net.blocks[name]
        params = list(block.parameters())
        is_classifier = name == CLASSIFIER
        fwd, bwd, bwd_no, step, saved = _time_block(
            block,
            params,
            inputs[i],
            labels if is_classifier else None,
            timer,
            warmup,
            repeats,
            precision,
        )
        out_shape = None if is_classifier else tuple(int(d) for d in inputs[i + 1].shape[1:])
        row: dict[str, Any] = {
            "block": name,
            "index": i,
            "is_cut": not is_classifier,
            "out_shape": out_shape,
            "out_numel": num_classes
            if out_shape is None
            else out_shape[0] * out_shape[1] * out_shape[2],
            "params": sum(p.numel() for p in params),
            "param_bytes": _nbytes(params),
            "buffer_bytes": _nbytes(block.buffers()),
            "saved_bytes": saved,
            "fwd_s": _median(fwd),
            "bwd_s": _median(bwd),
            "bwd_noinput_s": _median(bwd_no),
            "step_s": _median(step),
        }
        rows.append(row)
        say(
            f"  {name:10s} fwd {row['fwd_s'] * 1e3:9.2f} ms  bwd {row['bwd_s'] * 1e3:9.2f} ms  "
            f"(no input grad {row['bwd_noinput_s'] * 1e3:9.2f})  step {row['step_s'] * 1e3:7.2f} ms"
            f"  [{time.perf_counter() - started:.0f} s]"
        )

    # exit heads at each cut
    for i, name in enumerate(names[:-1]):
        row = rows[i]
        row["exit_s"], row["head_mem_bytes"] = {}, {}
        c = row["out_shape"][0]
        for kind in HEAD_KINDS:
            head = exit_head(c, num_classes, kind).to(dev).train()
            if cl:
                head = head.to(memory_format=torch.channels_last)
            t, head_saved = _time_head(
                head, inputs[i + 1], labels, timer, warmup, repeats, precision
            )
            row["exit_s"][kind] = t
            row["head_mem_bytes"][kind] = 3 * _nbytes(head.parameters()) + head_saved
        say(
            f"  exit@{name:10s} "
            + "  ".join(f"{k} {row['exit_s'][k] * 1e3:8.2f} ms" for k in HEAD_KINDS)
            + f"  [{time.perf_counter() - started:.0f} s]"
        )

    # the whole model, one training step: the cloud-only baseline
    opt = _sgd(net.parameters())
    full = []
    for r in range(max(warmup, 1) + repeats):
        t0 = timer.now()
        opt.zero_grad(set_to_none=True)
        with _amp(precision, dev):
            loss = F.cross_entropy(net(x), labels)
        loss.backward()
        opt.step()
        t1 = timer.now()
        if r >= max(warmup, 1):
            full.append(t1 - t0)
    t_full = _median(full)
    blocks_sum = sum(r["fwd_s"] + r["bwd_s"] + r["step_s"] for r in rows) - (
        rows[0]["bwd_s"] - rows[0]["bwd_noinput_s"]
    )
    say(f"  t_full {t_full * 1e3:.1f} ms (sum of blocks {blocks_sum * 1e3:.1f} ms)")

    # the whole edge part at the asked cuts, one training step as the edge runs it
    edge_step: dict[str, dict[str, float]] = {}
    gaps: list[tuple[float, float]] = []  # (wall, CPU) of each busy wait: not profiler work
    for cut in edge_cuts:
        if cut not in names[:-1]:
            raise ConfigError(f"{cut!r} is not a cut of {model}; cuts: {', '.join(names[:-1])}")
        i = names.index(cut)
        edge_step[cut] = {}
        # a slowed edge's step is long and steady; fewer repeats keep the calibration short
        w, n = (1, min(repeats, 3)) if edge_gap else (warmup, repeats)
        for kind in edge_heads:
            t = _time_edge_step(
                [net.blocks[n] for n in names[: i + 1]],
                rows[i]["out_shape"][0],
                num_classes,
                kind,
                x,
                labels,
                timer,
                w,
                n,
                precision,
                cl,
                gap=edge_gap[1] if edge_gap else None,
                gaps=gaps,
            )
            edge_step[cut][kind] = t
            parts_sum = sum(r["fwd_s"] + r["bwd_s"] + r["step_s"] for r in rows[: i + 1]) - (
                rows[0]["bwd_s"] - rows[0]["bwd_noinput_s"]
            )
            say(
                f"  edge step @{cut} ({kind} exit) {t * 1e3:.1f} ms (sum of its parts "
                f"{(parts_sum + rows[i]['exit_s'][kind]) * 1e3:.1f} ms)"
            )

    # memory of the edge part, and bytes on the wire
    input_bytes = batch * 3 * input_size * input_size
    if dev.type == "cuda":
        memory_method = "cuda max_memory_allocated (fresh edge copy + head, 2 training steps)"
        peaks = _cuda_edge_peaks(model, stem, num_classes, input_size, batch, dev, names)
    else:
        memory_method = (
            "accounting estimate: raw uint8 batch + edge blocks (3 x params + buffers + saved "
            "for backward) + cut output (fp32) + head (3 x params + saved)"
        )
        peaks = {}
        acc = input_bytes
        for i, name in enumerate(names[:-1]):
            r = rows[i]
            acc += 3 * r["param_bytes"] + r["buffer_bytes"] + r["saved_bytes"]
            out = 4 * batch * r["out_numel"]
            peaks[name] = {k: acc + out + r["head_mem_bytes"][k] for k in HEAD_KINDS}
    for i, name in enumerate(names[:-1]):
        r = rows[i]
        r["edge_peak_bytes"] = peaks[name]
        r["wire_bytes"] = {
            w: encoded_bytes(batch * r["out_numel"], CodecSetting(w)) for w in WIRE_BITS
        }
        r["zstd_ratio"] = dict.fromkeys(WIRE_BITS, 1.0)

    load_end = os.getloadavg()
    # Contention check: the CPU time this process got against what its threads could have had.
    # (The load average is recorded too, but it counts this profiler's own earlier work — e.g.
    # the previous profile of a script — so it cannot tell competition from ourselves.)
    # (The edge gap's busy wait yields at every turn, so its CPU time is not a measure of
    # competition: both its wall and its CPU time are left out.)
    wall = time.perf_counter() - started - sum(w for w, _ in gaps)
    cpu = time.process_time() - cpu_started - sum(c for _, c in gaps)
    cpu_share = cpu / max(wall * nthreads, 1e-9)
    loaded = None
    if dev.type == "cpu" and cpu_share < CPU_SHARE_WARN:
        loaded = (
            f"the profiler got {cpu_share:.0%} of {nthreads} thread(s)' CPU time: other work "
            "competed for the cores; timings are not trustworthy"
        )
        warnings.warn(loaded, RuntimeWarning, stacklevel=2)
    meta = {
        "format": FORMAT,
        "model": model,
        "stem": stem,
        "dataset": dataset,
        "num_classes": num_classes,
        "input_size": input_size,
        "batch": batch,
        "device": dev.type,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_model(),
        "threads": nthreads,
        "precision": precision,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "hierbench": __version__,
        "python": platform.python_version(),
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command if command is not None else " ".join(sys.argv),
        "warmup": warmup,
        "repeats": repeats,
        "statistic": "median",
        "optimizer": OPTIMIZER,
        "t_full_s": t_full,
        "t_full_blocks_sum_s": blocks_sum,
        "edge_step_s": edge_step,
        "edge_step_gap": edge_gap[0] if edge_gap else None,
        "input_bytes": input_bytes,
        "memory_method": memory_method,
        "wire_bytes": "one codec frame per batch (60 + 8*ndim header+CRC; quantized: packed "
        "codes + 8 bytes per group of 128), labels not included",
        "zstd_ratio": "1.0 placeholder: data-dependent, not measured by the profiler",
        "loadavg_start": [round(v, 2) for v in load_start],
        "loadavg_end": [round(v, 2) for v in load_end],
        "cpu_share": round(cpu_share, 3),
        "profile_wall_s": round(time.perf_counter() - started, 1),
        "warning": loaded,
        "notes": list(net.notes),
    }
    blocks = tuple(
        BlockProfile(
            block=r["block"],
            index=r["index"],
            is_cut=r["is_cut"],
            out_shape=r["out_shape"],
            out_numel=r["out_numel"],
            params=r["params"],
            param_bytes=r["param_bytes"],
            buffer_bytes=r["buffer_bytes"],
            saved_bytes=r["saved_bytes"],
            fwd_s=r["fwd_s"],
            bwd_s=r["bwd_s"],
            bwd_noinput_s=r["bwd_noinput_s"],
            step_s=r["step_s"],
            exit_s=r.get("exit_s", {}),
            head_mem_bytes=r.get("head_mem_bytes", {}),
            edge_peak_bytes=r.get("edge_peak_bytes", {}),
            wire_bytes=r.get("wire_bytes", {}),
            zstd_ratio=r.get("zstd_ratio", {}),
        )
        for r in rows
    )
    return Profile(meta=meta, blocks=blocks)


def _cuda_edge_peaks(
    model: str,
    stem: str,
    num_classes: int,
    input_size: int,
    batch: int,
    dev: torch.device,
    names: list[str],
) -> dict[str, dict[str, int]]:
    """Measured peak bytes of a fresh edge part + head training on ``dev``, per cut and head."""
    ref = build_model(model, num_classes, stem=stem, input_size=input_size)
    peaks: dict[str, dict[str, int]] = {}
    for cut in names[:-1]:
        peaks[cut] = {}
        for kind in HEAD_KINDS:
            torch.cuda.synchronize(dev)
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            edge = copy.deepcopy(split(ref, cut).edge).to(dev)
            head = exit_head(ref.cut_channels(cut), num_classes, kind).to(dev)
            opt = _sgd([*edge.parameters(), *head.parameters()])
            raw = torch.randint(0, 256, (batch, 3, input_size, input_size), dtype=torch.uint8)
            labels = torch.randint(0, num_classes, (batch,), device=dev)
            for _ in range(2):
                xb = raw.to(dev).float().div_(255.0)
                loss = F.cross_entropy(head(edge(xb)), labels)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            torch.cuda.synchronize(dev)
            peaks[cut][kind] = int(torch.cuda.max_memory_allocated(dev) - base)
            del edge, head, opt, loss, xb
    return peaks
