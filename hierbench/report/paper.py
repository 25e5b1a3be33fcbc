"""What the paper published, and the conventions every table of ours rests on.

See ``../shared/PAPER.md``.
"""

from __future__ import annotations

from hierbench.runtime.model import DEFAULT_CLOUD_SPEEDUP, Conventions
from hierbench.runtime.table import PAPER_CONFIGS, PAPER_SETTINGS

#: What a report covers unless a preset says otherwise (``runtime.table.PAPER_SETTINGS``).
DEFAULT_REPORT = PAPER_SETTINGS

#: The paper's headline: training-runtime reduction of hierarchical against standard
#: (cloud-only) training over a 3G link, at the paper's cut: (model, dataset) -> (cut, reduction).
PUBLISHED = {(model, dataset): (cut, red) for model, dataset, cut, red in PAPER_CONFIGS}

CITATION = (
    'Sepehri et al., "Hierarchical Training of Deep Neural Networks Using Early Exiting", '
    "arXiv 2303.02384 (IEEE TNNLS 2024)"
)


def convention_lines(conventions: Conventions | None = None) -> list[str]:
    """The counting conventions and assumptions of the runtime-model tables, one per line."""
    conv = conventions or Conventions()
    return [
        *conv.lines(),
        "networks: torchvision-style (imagenet stem: 7x7 stride-2 conv + max-pool); VGG-16 with "
        "batch norm; cuts at block boundaries",
        "edge: this machine's CPU, one core (the committed 1-thread profiles, results/profiles/)",
        f"cloud: ASSUMED {DEFAULT_CLOUD_SPEEDUP:g}x faster than one core of this CPU unless a "
        "CUDA profile is committed (no GPU was available to profile)",
        "optimizer: SGD momentum 0.9, weight decay 5e-4, lr 0.05 cosine, batch 128, same for all "
        "methods; exit head conv3x3 + BN + ReLU + pool + linear",
        "codec time: not in the predictions (measured encode rates are >= 2 GB/s per core, "
        "< 0.3 % of an edge step here)",
    ]


MEASURED_CONVENTIONS = [
    "edge and cloud are two processes pinned to one core each of this machine (the cloud is "
    "NOT a GPU: cloud speed factor 1 in the predictions they are compared with)",
    "link: loopback TCP through the transfer engine's token bucket at the preset's rates and "
    "one-way latency",
    "every batch is uploaded when used; bytes are whole messages (32-byte header, 1 byte per "
    "label, codec frame or raw uint8 pixels)",
    "training time: end to end, from the edge's first step to the last training event on either "
    "side (the cloud's last step, or the edge's last backward in split learning), nothing "
    "subtracted; timing runs do not evaluate",
    "each timing point is run 3 times (repeats interleaved); tables give the median and "
    "min … max; a run whose edge or cloud process got less than 90 % of its CPU while computing "
    "is flagged as disturbed and left out of the statistics",
    "predictions for measured runs come from profiles of the same blocks measured right before "
    "the runs (results/<preset>/profiles), with pipelined latency (τ paid once; the engine "
    "keeps messages in flight) — the convention the headline uses too",
    "contested configurations (VGG-16 @pool4, ResNet-18 @layer4 on Tiny ImageNet, and the "
    "paper's other rows): batch 16, 4 batches, the edge slowed 10x (its compute idles 9x as "
    "long again) so that the cloud is 10x the edge, as the headline assumes",
]
