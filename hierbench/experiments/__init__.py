"""The experiment grid: presets of runs, run one after another into ``results/<preset>/runs/``.

- :mod:`~hierbench.experiments.grid`: :class:`Experiment` (one run: ``timing`` over two
  processes, or ``accuracy``) and :class:`Preset` (a named list of them);
- :mod:`~hierbench.experiments.presets`: :data:`PRESETS` (smoke, quick, accuracy, paper),
  :func:`get_preset`, :func:`describe`;
- :mod:`~hierbench.experiments.run`: :func:`run_preset`, resumable, one run record per
  experiment and a ``manifest.json``.

Tables and plots are :mod:`hierbench.report`'s job: it reads the records and the device profiles
only (no torch), so they regenerate anywhere.
"""

from __future__ import annotations

from hierbench.experiments.grid import KINDS, Experiment, Preset
from hierbench.experiments.presets import PRESETS, describe, get_preset
from hierbench.experiments.run import MANIFEST_VERSION, finished, prepare_folder, run_preset

__all__ = [
    "KINDS",
    "MANIFEST_VERSION",
    "PRESETS",
    "Experiment",
    "Preset",
    "describe",
    "finished",
    "get_preset",
    "prepare_folder",
    "run_preset",
]
