"""What every layer must agree on, defined once: torch-free, importable anywhere.

- :mod:`~hierbench.spec.links`: the link presets (PAPER.md, "Conventions") and the one grammar of
  link strings (``3g``, ``20mbit/5ms``, ``1mbit:4mbit/75ms``, ``4g/50ms``) as :class:`LinkSpec`.
  The transfer engine builds its emulated ``Link`` from it; the runtime model predicts from it.
- :mod:`~hierbench.spec.datasets`: each dataset's number of classes and image size.
- :mod:`~hierbench.spec.profiles`: the file name of a device profile.
- :mod:`~hierbench.spec.records`: the run record: its version, its keys, the writer and the one
  reader that every consumer (validation, report, experiments) uses.
- :mod:`~hierbench.spec.stats`: mean ± std over seeds and differences paired by seed (95 % t).
- :mod:`~hierbench.spec.sync`: the grammar of a fleet's edge-model averaging (``fedavg:K``).

Nothing here imports torch, numpy or the native extension (``tests/test_layering.py``).
"""

from __future__ import annotations

from hierbench.spec.datasets import (
    DATASET_SHAPES,
    INPUT_SHAPES,
    TRAIN_SAMPLES,
    DatasetShape,
    dataset_shape,
)
from hierbench.spec.links import PRESETS, LinkSpec, format_rate, parse_link, parse_rate
from hierbench.spec.profiles import profile_filename
from hierbench.spec.records import (
    RECORD_VERSION,
    RunRecord,
    check_record,
    read_record,
    write_record,
)

__all__ = [
    "DATASET_SHAPES",
    "INPUT_SHAPES",
    "PRESETS",
    "RECORD_VERSION",
    "TRAIN_SAMPLES",
    "DatasetShape",
    "LinkSpec",
    "RunRecord",
    "check_record",
    "dataset_shape",
    "format_rate",
    "parse_link",
    "parse_rate",
    "profile_filename",
    "read_record",
    "write_record",
]
