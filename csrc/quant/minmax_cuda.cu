// group_minmax on CUDA.
//
// Grid: (blocks_per_group, groups). Each block reduces a contiguous slice of one group with
// 16-byte loads when the slice is 16-byte aligned (scalar loads otherwise and for the tail), then a
// warp-shuffle + shared-memory reduction. When a group spans several blocks (per-tensor scales of
// a large tensor), the blocks write partials and a second small kernel combines them. Launched on
// the caller's current stream; sizes and indices are 64-bit.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <torch/library.h>

#include <cstdint>

#include "../common/checks.h"
#include "cuda_common.cuh"

namespace hierbench {
namespace {

using device::Acc;
using device::acc_empty;
using device::to_f32;

constexpr int kThreads = 256;
constexpr int64_t kPerBlock = int64_t{kThreads} * 64;  // elements a block takes before splitting

__device__ __forceinline__ Acc warp_reduce(Acc a) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    Acc o{__shfl_down_sync(0xffffffffu, a.lo, off), __shfl_down_sync(0xffffffffu, a.hi, off),
          __shfl_down_sync(0xffffffffu, a.nan, off)};
    a.merge(o);
  }
  return a;
}

__device__ __forceinline__ Acc block_reduce(Acc a) {
  __shared__ Acc warps[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  a = warp_reduce(a);
  if (lane == 0) warps[warp] = a;
  __syncthreads();
  if (warp == 0) {
    a = lane < kThreads / 32 ? warps[lane] : acc_empty();
    a = warp_reduce(a);
  }
  return a;  // valid in thread 0
}

template <typename T>
__global__ void minmax_kernel(const T* __restrict__ x, int64_t numel, int64_t group_size,
                              int64_t slice, float* __restrict__ lo, float* __restrict__ hi,
                              Acc* __restrict__ partial) {
  const int64_t g = blockIdx.y;
  const int64_t group_begin = g * group_size;
  const int64_t group_end = min(numel, group_begin + group_size);
  const int64_t begin = group_begin + int64_t{blockIdx.x} * slice;
  const int64_t end = min(group_end, begin + slice);
  Acc a = acc_empty();
  constexpr int kVec = 16 / sizeof(T);
  // Scalar head up to 16-byte alignment, then 16-byte vector loads, then a scalar tail.
  const int64_t misalign = static_cast<int64_t>(reinterpret_cast<uintptr_t>(x + begin) & 15);
  const int64_t head_end = min(end, begin + ((16 - misalign) & 15) / int64_t{sizeof(T)});
  for (int64_t j = begin + threadIdx.x; j < head_end; j += kThreads) a.add(to_f32(x[j]));
  const int64_t i = head_end;
  const int64_t nvec = (end - i) / kVec;
  const uint4* v = reinterpret_cast<const uint4*>(x + i);
  for (int64_t k = threadIdx.x; k < nvec; k += kThreads) {
    uint4 u = __ldg(v + k);
    const T* e = reinterpret_cast<const T*>(&u);
#pragma unroll
    for (int q = 0; q < kVec; ++q) a.add(to_f32(e[q]));
  }
  for (int64_t j = i + nvec * kVec + threadIdx.x; j < end; j += kThreads) a.add(to_f32(x[j]));
  a = block_reduce(a);
  if (threadIdx.x == 0) {
    if (partial != nullptr) {
      partial[g * gridDim.x + blockIdx.x] = a;
    } else {
      lo[g] = a.nan ? NAN : a.lo;
      hi[g] = a.nan ? NAN : a.hi;
    }
  }
}

__global__ void combine_kernel(const Acc* __restrict__ partial, int64_t groups, int parts,
                               float* __restrict__ lo, float* __restrict__ hi) {
  const int64_t g = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (g >= groups) return;
  Acc a = partial[g * parts];
  for (int p = 1; p < parts; ++p) a.merge(partial[g * parts + p]);
  lo[g] = a.nan ? NAN : a.lo;
  hi[g] = a.nan ? NAN : a.hi;
}

void group_minmax_out_cuda(const at::Tensor& x_in, int64_t group_size, at::Tensor& mn,
                           at::Tensor& mx) {
  check_float_input(x_in, "x");
  check_group_size(group_size);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const int64_t numel = x.numel();
  const int64_t groups = ceil_div(numel, group_size);
  check_out(mn, "min", {groups}, at::kFloat, x.device());
  check_out(mx, "max", {groups}, at::kFloat, x.device());
  if (groups == 0) return;
  TORCH_CHECK_VALUE(groups <= 65535 || group_size <= kPerBlock * 1024,
                    "group_minmax: too many groups for one launch: ", groups);
  const int64_t parts = std::min<int64_t>(ceil_div(group_size, kPerBlock), 1024);
  const int64_t slice = ceil_div(group_size, parts);
  auto stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor partial;
  Acc* partial_ptr = nullptr;
  if (parts > 1) {
    partial = at::empty({groups * parts * static_cast<int64_t>(sizeof(Acc))},
                        x.options().dtype(at::kByte));
    partial_ptr = reinterpret_cast<Acc*>(partial.data_ptr());
  }
  // gridDim.y is limited to 65535: launch in y-chunks of groups.
  for (int64_t g0 = 0; g0 < groups; g0 += 65535) {
    const int64_t gn = std::min<int64_t>(65535, groups - g0);
    const dim3 grid(static_cast<unsigned>(parts), static_cast<unsigned>(gn));
    const int64_t off = g0 * group_size;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "group_minmax", [&] {
      minmax_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>() + off, numel - off, group_size, slice,
          mn.data_ptr<float>() + g0, mx.data_ptr<float>() + g0,
          partial_ptr ? partial_ptr + g0 * parts : nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  if (parts > 1) {
    combine_kernel<<<static_cast<unsigned>(ceil_div(groups, 256)), 256, 0, stream>>>(
        partial_ptr, groups, static_cast<int>(parts), mn.data_ptr<float>(), mx.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

std::tuple<at::Tensor, at::Tensor> group_minmax_cuda(const at::Tensor& x, int64_t group_size) {
  check_float_input(x, "x");
  check_group_size(group_size);
  const int64_t groups = ceil_div(x.numel(), group_size);
  auto mn = at::empty({groups}, x.options().dtype(at::kFloat));
  auto mx = at::empty({groups}, x.options().dtype(at::kFloat));
  group_minmax_out_cuda(x, group_size, mn, mx);
  return {mn, mx};
}

void group_minmax_out_cuda_op(const at::Tensor& x, int64_t group_size, at::Tensor mn,
                              at::Tensor mx) {
  group_minmax_out_cuda(x, group_size, mn, mx);
}

}  // namespace

TORCH_LIBRARY_IMPL(hierbench, CUDA, m) {
  m.impl("group_minmax", &group_minmax_cuda);
  m.impl("group_minmax.out", &group_minmax_out_cuda_op);
}

}  // namespace hierbench
