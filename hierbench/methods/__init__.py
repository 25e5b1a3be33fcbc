"""Training methods over the transfer engine: ``cloud_only``, ``split``, ``hierarchical``.

Each method is an edge role and a cloud role (:mod:`hierbench.methods.roles`) that share nothing
but channels, so one method runs in one process (threads) or in two processes (TCP) unchanged.
Allowed imports: ``data``, ``models``, ``codec``, ``transfer``, ``errors``, torch.
"""

from hierbench.methods.config import METHODS, RunConfig
from hierbench.methods.runner import run, write_record

__all__ = ["METHODS", "RunConfig", "run", "write_record"]
