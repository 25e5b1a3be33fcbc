"""Device fixture and tolerance policy for kernel tests.

Policy: integer codes and min/max must equal the reference bit for bit (``torch.equal``); any
intentional approximation is documented next to its test with its allowance.
"""

from __future__ import annotations

import pytest
import torch

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    dev = request.param
    if dev == "cuda":
        from hierbench import _ext

        if not torch.cuda.is_available():
            pytest.skip("no CUDA device")
        if not _ext.build_info()["with_cuda"]:
            pytest.skip("extension built without CUDA")
    return dev
