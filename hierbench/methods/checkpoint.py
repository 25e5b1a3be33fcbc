"""Checkpoint and resume (``cfg.checkpoint_every = N``; cloud_only and hierarchical): the
checkpoint files, and the protocol that :mod:`~hierbench.methods.edge` and
:mod:`~hierbench.methods.cloud` implement around them.

Each role checkpoints every ``N`` steps into its checkpoint folder, atomically (write a temporary
file, then rename): the cloud to ``cloud.pt`` (its model, optimizer, scheduler, records), the edge
to ``edge.pt`` (edge layers, exit head, optimizer, scheduler, data position, records, and the
uploads the cloud has not acknowledged yet, as uint8 tensors). Both are plain ``torch.save`` dicts
of tensors, numbers, strings and lists, read back with ``torch.load(weights_only=True)``.

The protocol, on the control channel (JSON objects; steps are global batch indices)::

    edge  -> cloud  hello    {config, steps_per_epoch, evals_done}   first, on every connection
    cloud -> edge   welcome  {next_step}  or  {error}                 the step the cloud needs next
    cloud -> edge   ack      {next_step}   after each cloud checkpoint: the edge may forget
                                           every upload below next_step
    ...             eval / eval_result, then after END on the data channel: records
    edge  -> cloud  done     the edge has the records (only with checkpoint_every: until then
                             the cloud stays ready for a reconnect)

*Uploads* carry their step in the message header. The edge keeps every upload from the last
acknowledged step on (in memory, and in its checkpoint). After ``welcome {next_step: s}`` it
sends, in order, exactly the kept uploads with step >= s and then every new one; the cloud
accepts only step ``expected`` (anything else is a :class:`~hierbench.errors.ProtocolError`),
so each step is trained exactly once, in order.

*The cloud goes away* (killed, restarted with ``--resume``): the edge's next send or receive
fails; it reconnects (retrying for ``reconnect_timeout``), says hello, and replays from the
``next_step`` of the restarted cloud's checkpoint, which is never below the last acknowledgement.

*The edge goes away* (killed, restarted with ``--resume``): the cloud's receive fails; it keeps
its state in memory, goes back to ``accept()``, checks the new edge's hello (same config) and
welcomes it with the step it needs next. The restarted edge loads its checkpoint (position ``e``,
kept uploads from ``a <= next_step``); it recomputes steps ``e ..`` in order (the data order and
augmentation depend only on ``(seed, epoch)``, the codec's rounding on the step), and uploads
only those the cloud still needs: kept ones from ``next_step`` on, recomputed ones from
``max(e, next_step)`` on. Training is deterministic, so the edge's recomputed state equals the
one it lost, and the run equals an uninterrupted one.

*The edge goes away before its first checkpoint* (restarted with ``--resume``): the edge made
its checkpoint folder before its first hello, so the folder exists without ``edge.pt``; the edge
starts again from step 0 (``e = 0``, nothing kept) and the rule above applies: it recomputes every
step and uploads from ``next_step`` on. ``--resume`` with no such folder is an error (a mistyped
path); without ``--resume``, a cloud already past step 0 refuses the edge and says to resume.

*The cloud goes away* does not stop the edge: the reconnect runs on the background thread that
saw the failure; the edge keeps training and queueing uploads until its backlog is full, then
waits (``uplink_stall_s`` in the record; ``cloud_away_s``: time spent reconnecting).

*Evaluation* requests the edge has sent but got no result for are resent after a reconnect;
``evals_done`` in hello tells the cloud which results the edge already holds, and the cloud
redoes any other evaluation of an epoch it has trained.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from hierbench.errors import ConfigError
from hierbench.methods.config import RunConfig

EDGE_CHECKPOINT = "edge.pt"
CLOUD_CHECKPOINT = "cloud.pt"


def atomic_save(state: dict, path: Path) -> None:
    """``torch.save`` to a temporary file, flushed to disk, then renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def load_checkpoint(path: Path, cfg: RunConfig, role: str) -> dict:
    """Read ``path`` (weights_only) and check that it is ``role``'s checkpoint of this run."""
    if not path.exists():
        raise ConfigError(
            f"--resume: no {role} checkpoint at {path}; check --checkpoint-dir, or start without "
            "--resume to begin a new run"
        )
    try:
        state = torch.load(path, weights_only=True)
    except Exception as exc:  # truncated, not a checkpoint, or unsafe content
        raise ConfigError(f"cannot read the {role} checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict) or state.get("role", role) != role or "config" not in state:
        raise ConfigError(f"{path} is not a hierbench {role} checkpoint")
    mine, theirs = cfg.to_dict(), state["config"]
    # The checkpoint cadence may change across a restart: it does not change what is computed.
    differ = sorted(
        k
        for k in set(mine) | set(theirs)
        if mine.get(k) != theirs.get(k) and k != "checkpoint_every"
    )
    if differ:
        detail = ", ".join(f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} here" for k in differ)
        raise ConfigError(
            f"the {role} checkpoint {path} belongs to another run ({detail}); resume with the "
            "same settings, or use another --checkpoint-dir (or none) for a new run"
        )
    return state
