// group_minmax on the CPU.
//
// One pass over the data. The inner loop is an OpenMP SIMD reduction compiled three times
// (AVX-512, AVX2, baseline x86-64) through GCC's target_clones; the loader picks the best clone
// for the running CPU, so the same .so runs everywhere. NaN is tracked by a separate OR-reduction
// because a vector min/max does not propagate NaN the way the reference (torch.amin) does.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

#include "../common/checks.h"
#include "../common/simd.h"
#include "cpu_common.h"

namespace hierbench {
namespace {

using cpu::combine;
using cpu::MinMax;
using cpu::minmax_range;

HIERBENCH_TARGET_CLONES MinMax minmax_f32(const float* p, int64_t n) {
  return minmax_range(p, n);
}
HIERBENCH_TARGET_CLONES MinMax minmax_bf16(const at::BFloat16* p, int64_t n) {
  return minmax_range(p, n);
}
HIERBENCH_TARGET_CLONES MinMax minmax_f16(const at::Half* p, int64_t n) {
  return minmax_range(p, n);
}

inline MinMax minmax_any(const void* p, at::ScalarType t, int64_t n) {
  switch (t) {
    case at::kFloat:
      return minmax_f32(static_cast<const float*>(p), n);
    case at::kBFloat16:
      return minmax_bf16(static_cast<const at::BFloat16*>(p), n);
    default:
      return minmax_f16(static_cast<const at::Half*>(p), n);
  }
}

// Large groups are cut into chunks so that a per-tensor reduction still uses every thread.
constexpr int64_t kChunk = int64_t{1} << 16;

void group_minmax_out_cpu(const at::Tensor& x_in, int64_t group_size, at::Tensor& mn,
                          at::Tensor& mx) {
  check_float_input(x_in, "x");
  check_group_size(group_size);
  const at::Tensor x = x_in.contiguous();
  const int64_t numel = x.numel();
  const int64_t groups = ceil_div(numel, group_size);
  check_out(mn, "min", {groups}, at::kFloat, x.device());
  check_out(mx, "max", {groups}, at::kFloat, x.device());
  if (groups == 0) return;

  const auto t = x.scalar_type();
  const int64_t esize = x.element_size();
  const char* base = static_cast<const char*>(x.const_data_ptr());
  float* lo = mn.data_ptr<float>();
  float* hi = mx.data_ptr<float>();
  const float qnan = std::numeric_limits<float>::quiet_NaN();
  auto finish = [&](int64_t g, const MinMax& r) {
    lo[g] = r.nan ? qnan : r.lo;
    hi[g] = r.nan ? qnan : r.hi;
  };

  const int64_t chunks = ceil_div(group_size, kChunk);
  if (chunks == 1) {
    const int64_t grain = std::max<int64_t>(1, kChunk / group_size);
    at::parallel_for(0, groups, grain, [&](int64_t g0, int64_t g1) {
      for (int64_t g = g0; g < g1; ++g) {
        const int64_t begin = g * group_size;
        const int64_t n = std::min(group_size, numel - begin);
        finish(g, minmax_any(base + begin * esize, t, n));
      }
    });
    return;
  }
  std::vector<MinMax> partial(groups * chunks, MinMax{0.f, 0.f, 0});
  at::parallel_for(0, groups * chunks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t g = task / chunks, c = task % chunks;
      const int64_t group_end = std::min(numel, (g + 1) * group_size);
      const int64_t begin = g * group_size + c * kChunk;
      const int64_t n = std::max<int64_t>(0, std::min(kChunk, group_end - begin));
      partial[task] = n > 0 ? minmax_any(base + begin * esize, t, n)
                            : MinMax{std::numeric_limits<float>::infinity(),
                                     -std::numeric_limits<float>::infinity(), 0};
    }
  });
  for (int64_t g = 0; g < groups; ++g) {
    MinMax r = partial[g * chunks];
    for (int64_t c = 1; c < chunks; ++c) r = combine(r, partial[g * chunks + c]);
    finish(g, r);
  }
}

std::tuple<at::Tensor, at::Tensor> group_minmax_cpu(const at::Tensor& x, int64_t group_size) {
  check_float_input(x, "x");
  check_group_size(group_size);
  const int64_t groups = ceil_div(x.numel(), group_size);
  auto mn = at::empty({groups}, x.options().dtype(at::kFloat));
  auto mx = at::empty({groups}, x.options().dtype(at::kFloat));
  group_minmax_out_cpu(x, group_size, mn, mx);
  return {mn, mx};
}

void group_minmax_out_cpu_op(const at::Tensor& x, int64_t group_size, at::Tensor mn,
                             at::Tensor mx) {
  group_minmax_out_cpu(x, group_size, mn, mx);
}

}  // namespace

TORCH_LIBRARY_IMPL(hierbench, CPU, m) {
  m.impl("group_minmax", &group_minmax_cpu);
  m.impl("group_minmax.out", &group_minmax_out_cpu_op);
}

}  // namespace hierbench
