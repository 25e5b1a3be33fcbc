"""group_minmax kernels against hierbench.ops.reference.group_minmax."""

from __future__ import annotations

import pytest
import torch

from hierbench import ops
from hierbench.ops import reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SIZES = [0, 1, 31, 97, 1025, 70_001]
GROUPS = [1, 32, 128, 1 << 17]  # 1<<17 exercises the chunked (multi-block) path


def _assert_same(got, want):
    for g, w in zip(got, want, strict=True):
        assert g.dtype == torch.float32
        assert torch.equal(g.cpu(), w.cpu()), (g, w)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("group_size", GROUPS)
def test_matches_reference(device, dtype, n, group_size):
    g = torch.Generator().manual_seed(n * 31 + group_size)
    x = (torch.randn(n, generator=g) * 10).to(dtype).to(device)
    _assert_same(ops.group_minmax(x, group_size), reference.group_minmax(x, group_size))


def test_large_tensor_chunked(device):
    # Several chunks per group and a partial last group: the parallel combine path.
    x = torch.randn(3 * (1 << 18) + 5, device=device)
    x[12345] = 1e30
    x[-1] = -1e30
    _assert_same(ops.group_minmax(x, 1 << 18), reference.group_minmax(x, 1 << 18))


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_and_channels_last(device, dtype):
    x = torch.randn(4, 6, 9, 5, device=device).to(dtype)
    for view in (x.transpose(1, 3), x[:, ::2], x.to(memory_format=torch.channels_last)):
        _assert_same(ops.group_minmax(view, 32), reference.group_minmax(view, 32))


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_propagates_inf_is_a_value(device, dtype):
    x = torch.randn(256, device=device).to(dtype)
    x[3] = float("nan")
    x[70] = float("inf")
    x[140] = float("-inf")
    lo, hi = ops.group_minmax(x, 64)
    assert lo[0].isnan() and hi[0].isnan()
    assert hi[1] == float("inf") and lo[2] == float("-inf")
    assert torch.isfinite(lo[3]) and torch.isfinite(hi[3])
    _assert_same((lo[1:], hi[1:]), tuple(t[1:] for t in reference.group_minmax(x, 64)))


def test_f16_subnormals_and_specials_exact(device):
    # Every finite fp16 bit pattern, widened exactly: the branch-free f16->f32 of the CPU kernel.
    bits = torch.arange(0, 1 << 16, dtype=torch.int32).to(torch.int16)
    x = bits.view(torch.float16)
    x = x[~x.isnan()].to(device)
    lo, hi = ops.group_minmax(x, 32)
    rlo, rhi = reference.group_minmax(x, 32)
    assert torch.equal(lo.cpu(), rlo.cpu()) and torch.equal(hi.cpu(), rhi.cpu())


def test_out_variant_reuses_buffers(device):
    x = torch.randn(1000, device=device)
    lo = torch.empty(8, device=device)
    hi = torch.empty(8, device=device)
    res = ops.group_minmax(x, 128, out=(lo, hi))
    assert res[0].data_ptr() == lo.data_ptr() and res[1].data_ptr() == hi.data_ptr()
    _assert_same((lo, hi), reference.group_minmax(x, 128))


def test_errors_name_the_problem(device):
    with pytest.raises(ValueError, match="group_size must be positive"):
        ops.group_minmax(torch.randn(4, device=device), 0)
    with pytest.raises(TypeError, match="x must be float32, float16 or bfloat16"):
        ops.group_minmax(torch.arange(4, device=device), 2)
    with pytest.raises(ValueError, match="min must have shape"):
        ops.group_minmax(torch.randn(10, device=device), 4, out=(torch.empty(2), torch.empty(3)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_opcheck(device, dtype):
    x = torch.randn(5, 33, device=device).to(dtype)
    torch.library.opcheck(torch.ops.hierbench.group_minmax.default, (x, 32))
    lo, hi = torch.empty(6, device=device), torch.empty(6, device=device)
    torch.library.opcheck(torch.ops.hierbench.group_minmax.out, (x, 32), {"min": lo, "max": hi})


def test_torch_compile_fullgraph(device):
    f = torch.compile(lambda t: ops.group_minmax(t * 2, 64), fullgraph=True, backend="eager")
    x = torch.randn(300, device=device)
    _assert_same(f(x), reference.group_minmax(x * 2, 64))
