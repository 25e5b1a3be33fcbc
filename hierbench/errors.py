"""The one exception hierarchy of hierbench.

Library failures raise a subclass of :class:`HierbenchError`; misuse (a wrong type, an out-of-range
argument) raises the built-in ``TypeError`` / ``ValueError``, as python-zstandard does.
"""

from __future__ import annotations

__all__ = [
    "CodecError",
    "ConfigError",
    "DatasetError",
    "ExtensionNotBuiltError",
    "HierbenchError",
    "NetnsUnavailable",
    "NonFiniteError",
    "ProcessError",
    "ProtocolError",
    "TransferClosed",
    "TransferError",
    "TransferTimeout",
]


class HierbenchError(Exception):
    """Base class of every error hierbench raises on purpose."""


class ExtensionNotBuiltError(HierbenchError, ImportError):
    """The compiled extension ``hierbench._C`` is missing or was built for another torch."""


class ConfigError(HierbenchError, ValueError):
    """A setting names something that does not exist (a model, a cut, a link preset, a codec...)."""


class DatasetError(HierbenchError, FileNotFoundError):
    """A dataset root is missing or does not have the expected layout."""


class CodecError(HierbenchError, ValueError):
    """A frame could not be encoded or decoded: malformed, truncated, corrupted or hostile input."""


class ProcessError(HierbenchError, RuntimeError):
    """A child process hierbench started (a cloud role, a namespace's listener) failed to start
    or exited with an error; the message carries the end of its stderr."""


class NonFiniteError(HierbenchError, FloatingPointError):
    """Training produced a non-finite loss or activation (it diverged): the run stops, and the
    message names the step and the side (edge or cloud) where it was seen."""


class NetnsUnavailable(HierbenchError, RuntimeError):
    """The kernel-shaped link mode cannot run here (not root, no ip/tc, no netns support)."""


class TransferError(HierbenchError, RuntimeError):
    """The transfer engine or a transport failed; the message names the cause."""


class TransferTimeout(TransferError, TimeoutError):
    """A blocking transfer call (send, recv, accept, connect, flush) ran past its timeout.

    The endpoint stays usable.
    """


class TransferClosed(TransferError):
    """The channel is closed: by this side (``close()``), or by the peer, cleanly."""


class ProtocolError(TransferError):
    """The peer broke the edge–cloud protocol of :mod:`hierbench.methods` (a lost or reordered
    step, an unexpected message): reconnecting would not help, so the resume machinery lets this
    one through."""
