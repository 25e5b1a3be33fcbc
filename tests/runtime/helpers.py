"""Hand-made profiles for the runtime tests (torch-free)."""

from __future__ import annotations

from hierbench.runtime.codec_bytes import WIRE_BITS
from hierbench.runtime.profiles import BlockProfile, Profile


def block(
    name: str,
    index: int,
    *,
    numel: int = 100,
    fwd: float = 1.0,
    bwd: float = 2.0,
    bwd_no: float | None = None,
    step: float = 0.5,
    exit_conv: float = 0.3,
    exit_minimal: float = 0.1,
    peak: int = 1000,
    cut: bool = True,
    params: int = 10,
) -> BlockProfile:
    c = numel if cut else None
    return BlockProfile(
        block=name,
        index=index,
        is_cut=cut,
        out_shape=(c, 1, 1) if cut else None,
        out_numel=numel,
        params=params,
        param_bytes=4 * params,
        buffer_bytes=0,
        saved_bytes=7,
        fwd_s=fwd,
        bwd_s=bwd,
        bwd_noinput_s=bwd if bwd_no is None else bwd_no,
        step_s=step,
        exit_s={"conv": exit_conv, "minimal": exit_minimal} if cut else {},
        head_mem_bytes={"conv": 11, "minimal": 3} if cut else {},
        edge_peak_bytes={"conv": peak, "minimal": peak - 1} if cut else {},
        wire_bytes=dict.fromkeys(WIRE_BITS, 123) if cut else {},
        zstd_ratio=dict.fromkeys(WIRE_BITS, 1.0) if cut else {},
    )


def profile(
    blocks: list[BlockProfile],
    *,
    t_full: float = 8.0,
    batch: int = 10,
    input_bytes: int = 3000,
    num_classes: int = 10,
    dataset: str = "synthetic",
    **meta,
) -> Profile:
    return Profile(
        meta={
            "model": "toy",
            "stem": "none",
            "dataset": dataset,
            "num_classes": num_classes,
            "input_size": 10,
            "batch": batch,
            "device": "cpu",
            "threads": 1,
            "t_full_s": t_full,
            "input_bytes": input_bytes,
            **meta,
        },
        blocks=tuple(blocks),
    )


def toy_profile(**kw) -> Profile:
    """Two cuts ``a`` (100 values/sample) and ``b`` (50), then the classifier; the numbers of
    the hand-computed cases in test_model.py."""
    return profile(
        [
            block("a", 0, numel=100, fwd=1, bwd=2, bwd_no=1.5, step=0.5, exit_conv=0.3, peak=1000),
            block("b", 1, numel=50, fwd=2, bwd=4, bwd_no=3, step=1, exit_conv=0.6, peak=5000),
            block("classifier", 2, numel=10, fwd=0.5, bwd=1, bwd_no=0.8, step=0.2, cut=False),
        ],
        **kw,
    )


#: A timing run's config as the validation and report tests use it (ResNet-18 layer3, 3g, q8).
RUN_CONFIG = {
    "method": "hierarchical",
    "model": "resnet18",
    "stem": "imagenet",
    "dataset": "cifar10",
    "cut": "layer3",
    "codec": "q8",
    "grad_codec": "q8",
    "link": "3g",
    "threads_edge": 1,
    "edge_slowdown": 1.0,
    "exit_head": "conv",
}


def run_record(config: dict, batches: int, train_wall_s: float, **extra) -> dict:
    """A minimal valid run record (version 2) with these totals; ``extra`` adds top-level keys."""
    from hierbench.spec.records import RECORD_VERSION, REQUIRED_KEYS, TOTALS_KEYS, TOTALS_V2

    totals = {k: 0 for k in TOTALS_KEYS} | {k: None for k in TOTALS_V2}
    totals |= {"batches": batches, "train_wall_s": train_wall_s}
    rec = {k: [] for k in REQUIRED_KEYS} | {"record_version": RECORD_VERSION}
    rec |= {"config": {**RUN_CONFIG, **config}, "environment": {}, "steps_per_epoch": batches}
    return rec | {"totals": totals} | extra
