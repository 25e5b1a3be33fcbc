"""Pure-PyTorch reference implementations: the specification every native kernel is tested against.

Each function here defines, in readable eager PyTorch, exactly what the op of the same name in
``torch.ops.hierbench`` computes. The kernels must agree bit for bit where the docstring says so.
"""

from __future__ import annotations

import torch

__all__ = ["group_minmax"]


def group_minmax(x: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group min and max of ``x.flatten()`` in groups of ``group_size`` consecutive elements.

    The last group may be partial. Values are widened to float32 (exact for fp16/bf16). A group
    holding a NaN gets NaN for both its min and max; +-inf are ordinary values.
    """
    if group_size <= 0:
        raise ValueError(f"group_size must be positive, got {group_size}")
    flat = x.detach().reshape(-1).float()
    n = flat.numel()
    groups = -(-n // group_size)
    if groups == 0:
        empty = torch.empty(0, dtype=torch.float32, device=x.device)
        return empty, empty.clone()
    pad = groups * group_size - n
    lo = torch.nn.functional.pad(flat, (0, pad), value=float("inf")).view(groups, group_size)
    hi = torch.nn.functional.pad(flat, (0, pad), value=float("-inf")).view(groups, group_size)
    return lo.amin(dim=1), hi.amax(dim=1)
