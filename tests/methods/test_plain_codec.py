"""Hierarchical training with a lossy codec computes exactly the plain loop's math, where the
cloud trains on ``decode(encode(activations))``; and the codec is what separates the two."""

from __future__ import annotations

import pytest
import torch

from hierbench.methods.plain import train_plain
from tests.methods.test_methods import _assert_same, _params, run_roles, small


@pytest.mark.parametrize("codec", ["q8", "q4+zstd1"])
def test_hierarchical_lossy_codec_equals_plain_loop_with_the_codec(cifar10_root, codec):
    cfg = small(cifar10_root, method="hierarchical", codec=codec)
    edge, cloud, _ = run_roles(cfg)
    ref = train_plain(cfg)
    _assert_same(_params(edge.edge, edge.head), _params(ref["edge"], ref["head"]))
    _assert_same(_params(cloud.net), _params(ref["cloud"]))
    # Without the codec round trip the cloud's parameters differ: the check above is not vacuous.
    exact = train_plain(cfg, codec=False)
    _assert_same(_params(exact["edge"], exact["head"]), _params(ref["edge"], ref["head"]))
    assert any(
        not torch.equal(a, b)
        for a, b in zip(_params(exact["cloud"]), _params(ref["cloud"]), strict=True)
    )
