// Shared by quant_cpu.cpp and quant_cuda.cu: argument checks, group geometry, the per-group
// parameter formula and the counter-based generator. Everything numeric here is the spec of
// hierbench/ops/reference.py::quantize written once for both compilers, so that the CPU and CUDA
// kernels produce the same bits: plain IEEE float32 operations, each rounded (GCC builds with
// -ffp-contract=off, nvcc with --fmad=false), no library calls. (The CUDA kernels are compiled in
// CI, not yet run on a GPU: the CPU side is tested bit for bit, the CUDA side not yet.)
#pragma once

#include <ATen/ATen.h>

#include <bit>
#include <cfloat>
#include <cstdint>
#include <string_view>

#include "../common/checks.h"

#if defined(__CUDACC__)
#define HB_HD __host__ __device__ __forceinline__
#else
#define HB_HD inline
#endif

namespace hierbench::quant {

enum class Granularity { kTensor, kChannel, kGroup };

// Round-to-nearest-even of t in [0, 2^23) with two float additions (the hardware rounds the sum
// to nearest even). No libm call, so the CPU loops vectorise on every x86-64 level.
constexpr float kRoundMagic = 8388608.0f;  // 2^23
constexpr float kTwoPowMinus24 = 5.9604644775390625e-08f;

// Wellons' lowbias32 mixer, modulo 2^32.
HB_HD uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

struct Keys {
  uint32_t k0, k1;
};

inline Keys seed_keys(int64_t seed) {
  const uint64_t s = static_cast<uint64_t>(seed);
  const uint32_t k0 = hash32(static_cast<uint32_t>(s) ^ 0x9e3779b9u);
  const uint32_t k1 = hash32(static_cast<uint32_t>(s >> 32) ^ k0 ^ 0x85ebca6bu);
  return {k0, k1};
}

// u in [0, 1) for the element whose flat index has low/high words idx_lo/idx_hi (24 bits, exact).
HB_HD float uniform24(uint32_t idx_lo, uint32_t idx_hi, Keys k) {
  const uint32_t r = hash32((hash32(idx_lo ^ k.k0) + idx_hi) ^ k.k1);
  return static_cast<float>(static_cast<int32_t>(r >> 8)) * kTwoPowMinus24;
}

// The per-group parameters: what quantize stores (scale, offset) and what its inner loop uses
// (qlo, inv). An invalid group (NaN/inf inside, or hi - lo overflowing) stores NaN and quantizes
// with qlo = inv = 0, which with the loop's clamps gives code 0 for every element, inf and NaN
// included. An empty group stores 0, 0.
struct GroupParams {
  float scale, offset, qlo, inv;
};

HB_HD GroupParams group_params(float lo, float hi, bool nan, bool empty, float qmax) {
  if (empty) lo = hi = 0.0f;
  const float rng = (hi - lo) + 0.0f;  // + 0: see offset below (-0 - +0 would give a -0 scale)
  const bool invalid = nan || !(rng <= FLT_MAX);  // NaN or +inf range
  if (invalid) {
#if defined(__CUDA_ARCH__)
    const float qnan = __int_as_float(0x7fc00000);
#else
    const float qnan = std::bit_cast<float>(0x7fc00000u);
#endif
    return {qnan, qnan, 0.0f, 0.0f};
  }
#if defined(__CUDA_ARCH__)
  const float scale = __fdiv_rn(rng, qmax);  // IEEE division whatever the nvcc flags
  const float inv = scale >= FLT_MIN ? __fdiv_rn(1.0f, scale) : 0.0f;
#else
  const float scale = rng / qmax;
  const float inv = scale >= FLT_MIN ? 1.0f / scale : 0.0f;
#endif
  // offset = lo + 0: a zero minimum is stored as +0 whichever zero the min/max loop kept (the
  // kernels reduce in different orders, and -0 == +0 compares equal), so every kernel writes the
  // same bits.
  return {scale, lo + 0.0f, lo, inv};
}

// t -> code, round to nearest even; t = (x - qlo) * inv. Clamping below 0 maps the NaN of an
// invalid group (inf * 0) to 0; valid groups never have t < 0.
HB_HD float clamp_t(float t, float qmax) {
  t = t > 0.0f ? t : 0.0f;
  return t < qmax ? t : qmax;
}
HB_HD int32_t code_nearest(float t) {
  return static_cast<int32_t>((t + kRoundMagic) - kRoundMagic);
}
HB_HD int32_t code_stochastic(float t, float u) {
  const float r = (t + kRoundMagic) - kRoundMagic;
  const float fl = r > t ? r - 1.0f : r;
  return static_cast<int32_t>(fl) + (u < t - fl ? 1 : 0);
}

// Everything the kernels need to know about one call, validated.
struct Spec {
  int bits = 8;
  Granularity gran = Granularity::kGroup;
  int64_t group_size = 0;  // kGroup: the group size; kTensor: numel (>= 1); kChannel: unused
  int64_t outer = 1, channels = 1, inner = 1;  // kChannel: x viewed as (outer, channels, inner)
  bool stochastic = false;
  Keys keys{0, 0};
  int64_t numel = 0, groups = 0, nbytes = 0;
  float qmax = 255.0f;
};

inline Granularity parse_granularity(std::string_view g) {
  if (g == "tensor") return Granularity::kTensor;
  if (g == "channel") return Granularity::kChannel;
  TORCH_CHECK_VALUE(g == "group", "granularity must be 'tensor', 'channel' or 'group', got '",
                    std::string(g), "'");
  return Granularity::kGroup;
}

inline bool parse_rounding(std::string_view r) {
  TORCH_CHECK_VALUE(r == "nearest" || r == "stochastic",
                    "rounding must be 'nearest' or 'stochastic', got '", std::string(r), "'");
  return r == "stochastic";
}

inline Spec make_spec(at::IntArrayRef shape, int64_t bits, std::string_view granularity,
                      int64_t group_size, int64_t channel_dim) {
  TORCH_CHECK_VALUE(bits == 2 || bits == 4 || bits == 8, "bits must be 2, 4 or 8, got ", bits);
  Spec s;
  s.bits = static_cast<int>(bits);
  s.qmax = static_cast<float>((1 << bits) - 1);
  s.gran = parse_granularity(granularity);
  int64_t numel = 1;
  for (const int64_t d : shape) {
    TORCH_CHECK_VALUE(d >= 0, "shape must have non-negative sizes, got ", shape);
    numel *= d;
  }
  s.numel = numel;
  s.nbytes = ceil_div(numel * bits, 8);
  switch (s.gran) {
    case Granularity::kTensor:
      s.group_size = std::max<int64_t>(numel, 1);
      s.groups = 1;
      break;
    case Granularity::kGroup:
      TORCH_CHECK_VALUE(group_size >= 32 && (group_size & (group_size - 1)) == 0,
                        "group_size must be a power of two >= 32, got ", group_size);
      s.group_size = group_size;
      s.groups = ceil_div(numel, group_size);
      break;
    case Granularity::kChannel: {
      const int64_t ndim = static_cast<int64_t>(shape.size());
      TORCH_CHECK_VALUE(ndim > 0, "granularity 'channel' needs a tensor with at least one "
                                  "dimension, got a 0-d tensor");
      TORCH_CHECK_VALUE(channel_dim >= -ndim && channel_dim < ndim, "channel_dim must be in [",
                        -ndim, ", ", ndim - 1, "] for a tensor of ", ndim,
                        " dimensions, got ", channel_dim);
      const int64_t d = channel_dim < 0 ? channel_dim + ndim : channel_dim;
      s.channels = shape[d];
      for (int64_t i = 0; i < d; ++i) s.outer *= shape[i];
      for (int64_t i = d + 1; i < ndim; ++i) s.inner *= shape[i];
      s.groups = s.channels;
      break;
    }
  }
  return s;
}

// The checks both backends run on quantize's outputs.
inline void check_quant_outputs(const Spec& s, const at::Tensor& payload, const at::Tensor& scale,
                                const at::Tensor& offset, const at::Device& dev) {
  check_out(payload, "payload", {s.nbytes}, at::kByte, dev);
  check_out(scale, "scale", {s.groups}, at::kFloat, dev);
  check_out(offset, "offset", {s.groups}, at::kFloat, dev);
}

// The checks both backends run on dequantize's inputs.
inline void check_dequant_inputs(const Spec& s, const at::Tensor& payload, const at::Tensor& scale,
                                 const at::Tensor& offset) {
  const auto dev = payload.device();
  TORCH_CHECK_TYPE(payload.scalar_type() == at::kByte, "payload must be uint8, got ",
                   payload.scalar_type());
  TORCH_CHECK_VALUE(payload.dim() == 1 && payload.size(0) == s.nbytes,
                    "payload must have shape [", s.nbytes, "] (ceil(numel * bits / 8)), got ",
                    payload.sizes());
  TORCH_CHECK_TYPE(scale.scalar_type() == at::kFloat, "scale must be float32, got ",
                   scale.scalar_type());
  TORCH_CHECK_TYPE(offset.scalar_type() == at::kFloat, "offset must be float32, got ",
                   offset.scalar_type());
  TORCH_CHECK_VALUE(scale.dim() == 1 && scale.size(0) == s.groups, "scale must have shape [",
                    s.groups, "], got ", scale.sizes());
  TORCH_CHECK_VALUE(offset.dim() == 1 && offset.size(0) == s.groups, "offset must have shape [",
                    s.groups, "], got ", offset.sizes());
  check_same_device(payload, "payload", scale, "scale");
  check_same_device(payload, "payload", offset, "offset");
  (void)dev;
}

inline void check_out_dtype(at::ScalarType t, const char* name) {
  TORCH_CHECK_TYPE(t == at::kFloat || t == at::kHalf || t == at::kBFloat16, name,
                   " must be float32, float16 or bfloat16, got ", t);
}

}  // namespace hierbench::quant
