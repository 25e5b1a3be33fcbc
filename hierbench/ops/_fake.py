"""Fake (meta) kernels: output shapes and dtypes from input metadata, without running anything.

They let ``torch.compile`` trace the ops and ``torch.library.opcheck`` verify the schemas. Each one
repeats the C++ argument checks with ``torch._check`` so that tracing fails the same way.
"""

from __future__ import annotations

import torch

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_float(x: torch.Tensor, name: str) -> None:
    torch._check(
        x.dtype in _FLOAT_DTYPES,
        lambda: f"{name} must be float32, float16 or bfloat16, got {x.dtype}",
    )


@torch.library.register_fake("hierbench::group_minmax")
def _group_minmax_fake(x: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    _check_float(x, "x")
    torch._check(group_size > 0, lambda: f"group_size must be positive, got {group_size}")
    groups = (x.numel() + group_size - 1) // group_size
    return x.new_empty(groups, dtype=torch.float32), x.new_empty(groups, dtype=torch.float32)


@torch.library.register_fake("hierbench::group_minmax.out")
def _group_minmax_out_fake(x, group_size, *, min, max) -> None:
    _check_float(x, "x")
    torch._check(group_size > 0, lambda: f"group_size must be positive, got {group_size}")
