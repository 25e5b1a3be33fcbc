"""``hierbench report``: tables (CSV + Markdown) and plots (PNG) of a results folder, from its run
records and the device profiles; torch-free.

- :mod:`~hierbench.report.load`: reading a results folder (manifest, run records);
- :mod:`~hierbench.report.tables`: the tables (pandas), :mod:`~hierbench.report.plots`: the plots
  (matplotlib), :mod:`~hierbench.report.paper`: the published numbers and the conventions;
- :mod:`~hierbench.report.markdown`: Markdown tables and ``results/<preset>/README.md``;
- :mod:`~hierbench.report.write`: :func:`write_report`, all of it into the folder;
- :mod:`~hierbench.report.converge`: :func:`write_converge_report`, the ``converge`` campaign's
  README, tables and plot (statistics over seeds, paired drops, time to accuracy);
- :mod:`~hierbench.report.scale`: :func:`write_scale_report`, ``hierbench predict-scale``'s
  saturation table, throughput curves and scaling plot (predictions for E edges, W workers);
- :mod:`~hierbench.report.readme`: :func:`headline_markdown`, the repository README's results
  block, and :func:`update_readme`.
"""

from __future__ import annotations

from hierbench.report.converge import write_converge_report
from hierbench.report.load import load_folder
from hierbench.report.markdown import markdown_table
from hierbench.report.readme import (
    BEGIN,
    END,
    README_FOLDERS,
    headline_markdown,
    update_readme,
)
from hierbench.report.write import write_report

__all__ = [
    "BEGIN",
    "END",
    "README_FOLDERS",
    "headline_markdown",
    "load_folder",
    "markdown_table",
    "update_readme",
    "write_converge_report",
    "write_report",
]
