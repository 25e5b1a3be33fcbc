"""Training methods over the transfer engine: ``cloud_only``, ``split``, ``hierarchical``.

Each method is an edge role (:mod:`~hierbench.methods.edge`) and a cloud role
(:mod:`~hierbench.methods.cloud`) that share nothing but two channels, so one method runs in one
process (threads) or in two processes (TCP) unchanged:

``data``    the emulated link: training uploads (and split learning's gradients down).
``control`` unshaped: the run config, evaluation traffic, results. Evaluation time is recorded
            separately so that it never counts as training time.

Per method (``../shared/PAPER.md``):

* ``cloud_only``   edge: upload uint8 batch + labels.  cloud: normalise, train the whole model.
* ``split``        edge: forward to the cut, upload activations, wait for the gradient, backward,
                   step.  cloud: forward, loss, backward, step, send the gradient at the cut.
                   Strictly sequential.
* ``hierarchical`` edge: forward to the cut, hand the encoded activations to the uplink, early-exit
                   loss, backward, step; never waits for the cloud (a byte-bounded backlog absorbs a
                   slow or failed link).  cloud: consume in order, train its part.

Both roles build their parts with :mod:`~hierbench.methods.parts`, exchange
:mod:`~hierbench.methods.messages`, and checkpoint and resume as
:mod:`~hierbench.methods.checkpoint` describes.

Allowed imports: ``data``, ``models``, ``codec``, ``transfer``, ``errors``, torch.
"""

from hierbench.methods.config import METHODS, RunConfig
from hierbench.methods.runner import run, write_record

__all__ = ["METHODS", "RunConfig", "run", "write_record"]
