// quantize / dequantize on CUDA.
//
// "group" with group_size up to 32 slots x 8 (a slot = 16 bytes of input: 4 floats or 8 halves)
// runs one fused kernel: a sub-warp of W lanes owns a group, each lane loads its slots with 16-byte
// loads into registers, the sub-warp reduces min/max with shuffles, computes the parameters and
// writes the codes of its slots as one 1-8 byte store per slot. A slot always covers whole output
// bytes, so no two threads ever write the same byte. Global memory is read once.
//
// Per-tensor, per-channel and larger groups need a group's min/max before its first code: a
// partial min/max kernel (block reductions over slices; per-channel by rows or by columns), a
// kernel that folds the partials into the parameters, then a flat quantize kernel. Two reads.
//
// Arithmetic is the exact IEEE sequence of quant_common.h (--fmad=false, and the multiply-add
// of dequantize spelled __fmul_rn/__fadd_rn), so every bit matches the CPU kernels and the
// reference. Launches go to the caller's current stream under a CUDAGuard; sizes and indices are
// 64-bit; misaligned tensors (views with an offset) take scalar loads/stores.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "cuda_common.cuh"
#include "quant_common.h"

namespace hierbench::quant {
namespace {

using device::Acc;
using device::acc_empty;
using device::to_f32;

constexpr int kThreads = 256;
constexpr int kMaxSlotsPerLane = 8;              // fused path: up to 32 * 8 slots per group
constexpr int64_t kPerBlock = int64_t{kThreads} * 64;  // elements a partial min/max block takes
constexpr int64_t kColumnInner = 256;            // per-channel rows shorter than this: by column

// ----------------------------------------------------------------------------------------------
// element access
// ----------------------------------------------------------------------------------------------
__device__ __forceinline__ int64_t dceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(at::Half* p, float v) {
  p->x = __half_as_ushort(__float2half_rn(v));
}
__device__ __forceinline__ void store(at::BFloat16* p, float v) {
  p->x = __bfloat16_as_ushort(__float2bfloat16_rn(v));
}


// Butterfly reduction within aligned sub-warps of `width` lanes: every lane gets the result.
__device__ __forceinline__ Acc subwarp_reduce(Acc a, int width) {
  for (int off = width / 2; off > 0; off >>= 1) {
    Acc o{__shfl_xor_sync(0xffffffffu, a.lo, off), __shfl_xor_sync(0xffffffffu, a.hi, off),
          __shfl_xor_sync(0xffffffffu, a.nan, off)};
    a.merge(o);
  }
  return a;
}

__device__ __forceinline__ Acc block_reduce(Acc a) {
  __shared__ Acc warps[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  a = subwarp_reduce(a, 32);
  if (lane == 0) warps[warp] = a;
  __syncthreads();
  if (warp == 0) {
    a = lane < kThreads / 32 ? warps[lane] : acc_empty();
    a = subwarp_reduce(a, 32);
  }
  return a;  // valid in thread 0
}

__device__ __forceinline__ uint32_t code_of(float v, float qlo, float inv, float qmax, bool stoch,
                                            int64_t k, Keys keys) {
  const float t = clamp_t(__fmul_rn(__fsub_rn(v, qlo), inv), qmax);
  if (!stoch) return static_cast<uint32_t>(code_nearest(t));
  const float u =
      uniform24(static_cast<uint32_t>(k), static_cast<uint32_t>(static_cast<uint64_t>(k) >> 32),
                keys);
  return static_cast<uint32_t>(code_stochastic(t, u));
}

// Store the low `nbytes_slot` bytes of `word` at p (one store when aligned), clipped to `limit`
// bytes for the slot at the end of the tensor.
__device__ __forceinline__ void store_bytes(uint8_t* p, uint64_t word, int width, int64_t limit,
                                            bool aligned) {
  if (aligned && limit >= width) {
    switch (width) {
      case 1:
        *p = static_cast<uint8_t>(word);
        return;
      case 2:
        *reinterpret_cast<uint16_t*>(p) = static_cast<uint16_t>(word);
        return;
      case 4:
        *reinterpret_cast<uint32_t*>(p) = static_cast<uint32_t>(word);
        return;
      default:
        *reinterpret_cast<uint64_t*>(p) = word;
        return;
    }
  }
  const int n = limit < width ? static_cast<int>(limit) : width;
  for (int b = 0; b < n; ++b) p[b] = static_cast<uint8_t>(word >> (8 * b));
}

// Load the V elements of the slot starting at flat index k; elements at or past numel read as 0.
template <typename T, int V>
__device__ __forceinline__ int load_slot(const T* __restrict__ x, int64_t k, int64_t numel,
                                         bool aligned, float (&v)[V]) {
  if (aligned && k + V <= numel) {
    const uint4 u = __ldg(reinterpret_cast<const uint4*>(x + k));
    const T* e = reinterpret_cast<const T*>(&u);
#pragma unroll
    for (int q = 0; q < V; ++q) v[q] = to_f32(e[q]);
    return V;
  }
  const int n = numel - k < V ? static_cast<int>(numel - k) : V;
#pragma unroll
  for (int q = 0; q < V; ++q) v[q] = q < n ? to_f32(x[k + q]) : 0.0f;
  return n;
}

// ----------------------------------------------------------------------------------------------
// fused "group" kernel
// ----------------------------------------------------------------------------------------------
template <typename T, int R>
__global__ void __launch_bounds__(kThreads)
    quant_groups_kernel(const T* __restrict__ x, Spec s, int width, bool aligned,
                        uint8_t* __restrict__ payload, float* __restrict__ scale,
                        float* __restrict__ offset) {
  constexpr int V = 16 / sizeof(T);
  const int lane = threadIdx.x & 31;
  const int sl = lane % width;
  const int64_t warp = (int64_t{blockIdx.x} * kThreads + threadIdx.x) >> 5;
  const int64_t g = warp * (32 / width) + lane / width;
  const bool active = g < s.groups;  // no early return: the shuffles need every lane
  const int64_t begin = g * s.group_size;
  float v[R][V];
  int valid[R];
  Acc a = acc_empty();
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int64_t k = begin + (int64_t{r} * width + sl) * V;
    valid[r] = 0;
    if (active && k < s.numel) valid[r] = load_slot<T, V>(x, k, s.numel, aligned, v[r]);
#pragma unroll
    for (int q = 0; q < V; ++q)
      if (q < valid[r]) a.add(v[r][q]);
  }
  a = subwarp_reduce(a, width);
  if (!active) return;
  const GroupParams p = group_params(a.lo, a.hi, a.nan != 0, false, s.qmax);
  if (sl == 0) {
    scale[g] = p.scale;
    offset[g] = p.offset;
  }
  const int slot_bytes = V * s.bits / 8;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (valid[r] == 0) continue;
    const int64_t k = begin + (int64_t{r} * width + sl) * V;
    uint64_t word = 0;
#pragma unroll
    for (int q = 0; q < V; ++q) {
      const uint32_t c = code_of(v[r][q], p.qlo, p.inv, s.qmax, s.stochastic, k + q, s.keys);
      if (q < valid[r]) word |= uint64_t{c} << (q * s.bits);
    }
    const int64_t byte = k * s.bits / 8;
    store_bytes(payload + byte, word, slot_bytes, s.nbytes - byte, aligned);
  }
}

// ----------------------------------------------------------------------------------------------
// two-pass path: partial min/max, parameters, flat quantize
// ----------------------------------------------------------------------------------------------

// Block b reduces slice b % parts of row b / parts; rows are `row_len` consecutive elements.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    partial_minmax_kernel(const T* __restrict__ x, int64_t numel, int64_t row_len, int64_t parts,
                          int64_t slice, Acc* __restrict__ partial) {
  const int64_t b = blockIdx.x;
  const int64_t row = b / parts, part = b % parts;
  const int64_t row_begin = row * row_len;
  const int64_t row_end = min(numel, row_begin + row_len);
  const int64_t begin = row_begin + part * slice;
  const int64_t end = min(row_end, begin + slice);
  Acc a = acc_empty();
  constexpr int kVec = 16 / sizeof(T);
  // Scalar head up to 16-byte alignment, 16-byte loads, scalar tail.
  const int64_t misalign = static_cast<int64_t>(reinterpret_cast<uintptr_t>(x + begin) & 15);
  const int64_t head_end =
      max(begin, min(end, begin + ((16 - misalign) & 15) / int64_t{sizeof(T)}));
  for (int64_t j = begin + threadIdx.x; j < head_end; j += kThreads) a.add(to_f32(x[j]));
  const int64_t nvec = max(int64_t{0}, (end - head_end) / kVec);
  const uint4* vp = reinterpret_cast<const uint4*>(x + head_end);
  for (int64_t i = threadIdx.x; i < nvec; i += kThreads) {
    const uint4 u = __ldg(vp + i);
    const T* e = reinterpret_cast<const T*>(&u);
#pragma unroll
    for (int q = 0; q < kVec; ++q) a.add(to_f32(e[q]));
  }
  for (int64_t j = head_end + nvec * kVec + threadIdx.x; j < end; j += kThreads)
    a.add(to_f32(x[j]));
  a = block_reduce(a);
  if (threadIdx.x == 0) partial[b] = a;
}

// Column partials for per-channel with short rows: x as (outer, L); block (bx, chunk) reduces
// columns [bx * kThreads, +kThreads) over the rows of outer-chunk `chunk`.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    column_minmax_kernel(const T* __restrict__ x, int64_t outer, int64_t L, int64_t rows_per,
                         Acc* __restrict__ partial) {
  const int64_t l = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  if (l >= L) return;
  const int64_t o0 = chunk * rows_per, o1 = min(outer, o0 + rows_per);
  Acc a = acc_empty();
  for (int64_t o = o0; o < o1; ++o) a.add(to_f32(x[o * L + l]));
  partial[chunk * L + l] = a;
}

// One block per group: fold its partials, write scale/offset and the quantize parameters.
// layout 0: partials of group g are [g * items, (g + 1) * items).
// layout 1 (per-channel rows): item i = (o, part) -> ((o * channels + g) * parts + part).
// layout 2 (per-channel columns): item i = (chunk, j) -> chunk * L + g * inner + j.
__global__ void __launch_bounds__(kThreads)
    params_kernel(const Acc* __restrict__ partial, Spec s, int layout, int64_t items, int64_t parts,
                  float* __restrict__ scale, float* __restrict__ offset,
                  float2* __restrict__ qparams) {
  const int64_t g = blockIdx.x;
  Acc a = acc_empty();
  const int64_t L = s.channels * s.inner;
  for (int64_t i = threadIdx.x; i < items; i += kThreads) {
    int64_t idx;
    if (layout == 0) {
      idx = g * items + i;
    } else if (layout == 1) {
      idx = ((i / parts) * s.channels + g) * parts + i % parts;
    } else {
      idx = (i / s.inner) * L + g * s.inner + i % s.inner;
    }
    a.merge(partial[idx]);
  }
  a = block_reduce(a);
  if (threadIdx.x == 0) {
    bool empty;
    if (s.gran == Granularity::kChannel) {
      empty = s.outer * s.inner == 0;
    } else {
      empty = g * s.group_size >= s.numel;
    }
    const GroupParams p = group_params(a.lo, a.hi, a.nan != 0, empty, s.qmax);
    scale[g] = p.scale;
    offset[g] = p.offset;
    qparams[g] = make_float2(p.qlo, p.inv);
  }
}

// Group of flat element e: per-tensor 0, "group" e >> shift, per-channel (e / inner) % channels.
struct GroupOf {
  Granularity gran;
  int shift;
  int64_t inner, channels;
  __device__ __forceinline__ int64_t operator()(int64_t e) const {
    if (gran == Granularity::kTensor) return 0;
    if (gran == Granularity::kGroup) return e >> shift;
    return (e / inner) % channels;
  }
};

// Walks a slot's elements: the group of the first is computed once, the rest by stepping.
struct GroupWalk {
  GroupOf go;
  int64_t g, pos;
  __device__ __forceinline__ GroupWalk(const GroupOf& go_, int64_t e) : go(go_) {
    g = go(e);
    pos = go.gran == Granularity::kChannel ? e % go.inner : 0;
  }
  __device__ __forceinline__ void next(int64_t e_next) {
    if (go.gran == Granularity::kChannel) {
      if (++pos == go.inner) {
        pos = 0;
        g = g + 1 == go.channels ? 0 : g + 1;
      }
    } else if (go.gran == Granularity::kGroup) {
      g = e_next >> go.shift;
    }
  }
};

template <typename T>
__global__ void __launch_bounds__(kThreads)
    quant_flat_kernel(const T* __restrict__ x, Spec s, GroupOf go, bool aligned,
                      const float2* __restrict__ qparams, uint8_t* __restrict__ payload) {
  constexpr int V = 16 / sizeof(T);
  const int64_t slots = dceil_div(s.numel, V);
  const int slot_bytes = V * s.bits / 8;
  for (int64_t slot = int64_t{blockIdx.x} * kThreads + threadIdx.x; slot < slots;
       slot += int64_t{gridDim.x} * kThreads) {
    const int64_t k = slot * V;
    float v[V];
    const int n = load_slot<T, V>(x, k, s.numel, aligned, v);
    GroupWalk w(go, k);
    uint64_t word = 0;
#pragma unroll
    for (int q = 0; q < V; ++q) {
      if (q < n) {
        const float2 p = __ldg(qparams + w.g);
        const uint32_t c = code_of(v[q], p.x, p.y, s.qmax, s.stochastic, k + q, s.keys);
        word |= uint64_t{c} << (q * s.bits);
        w.next(k + q + 1);
      }
    }
    const int64_t byte = k * s.bits / 8;
    store_bytes(payload + byte, word, slot_bytes, s.nbytes - byte, aligned);
  }
}

int log2_exact(int64_t v) {
  int s = 0;
  while ((int64_t{1} << s) < v) ++s;
  return s;
}

unsigned grid_for(int64_t work_items) {
  return static_cast<unsigned>(std::min<int64_t>(ceil_div(work_items, kThreads), 65535 * 8));
}

// ----------------------------------------------------------------------------------------------
// dequantize
// ----------------------------------------------------------------------------------------------
template <typename O>
__global__ void __launch_bounds__(kThreads)
    dequant_kernel(const uint8_t* __restrict__ payload, const float* __restrict__ scale,
                   const float* __restrict__ offset, Spec s, GroupOf go, bool aligned,
                   O* __restrict__ out) {
  constexpr int V = 8;  // a slot of 8 codes = `bits` bytes of payload
  const int64_t slots = dceil_div(s.numel, V);
  const uint64_t mask = (uint64_t{1} << s.bits) - 1;
  for (int64_t slot = int64_t{blockIdx.x} * kThreads + threadIdx.x; slot < slots;
       slot += int64_t{gridDim.x} * kThreads) {
    const int64_t k = slot * V;
    const int64_t byte = k * s.bits / 8;
    const int n = s.numel - k < V ? static_cast<int>(s.numel - k) : V;
    uint64_t word = 0;
    if (aligned && n == V) {
      switch (s.bits) {
        case 2:
          word = __ldg(reinterpret_cast<const uint16_t*>(payload + byte));
          break;
        case 4:
          word = __ldg(reinterpret_cast<const uint32_t*>(payload + byte));
          break;
        default:
          word = __ldg(reinterpret_cast<const unsigned long long*>(payload + byte));
      }
    } else {
      const int nb = static_cast<int>(dceil_div(int64_t{n} * s.bits, 8));
      for (int b = 0; b < nb; ++b) word |= uint64_t{payload[byte + b]} << (8 * b);
    }
    GroupWalk w(go, k);
    float y[V];
#pragma unroll
    for (int q = 0; q < V; ++q) {
      if (q < n) {
        const float c = static_cast<float>(static_cast<uint32_t>((word >> (q * s.bits)) & mask));
        y[q] = __fadd_rn(__ldg(offset + w.g), __fmul_rn(c, __ldg(scale + w.g)));
        w.next(k + q + 1);
      }
    }
    if (aligned && n == V) {
      if constexpr (sizeof(O) == 4) {
        float4* o = reinterpret_cast<float4*>(out + k);
        o[0] = make_float4(y[0], y[1], y[2], y[3]);
        o[1] = make_float4(y[4], y[5], y[6], y[7]);
      } else {
        O h[V];
#pragma unroll
        for (int q = 0; q < V; ++q) store(h + q, y[q]);
        uint32_t w[V / 2];
#pragma unroll
        for (int i = 0; i < V / 2; ++i)
          w[i] = uint32_t{h[2 * i].x} | (uint32_t{h[2 * i + 1].x} << 16);
        *reinterpret_cast<uint4*>(out + k) = make_uint4(w[0], w[1], w[2], w[3]);
      }
    } else {
#pragma unroll
      for (int q = 0; q < V; ++q)
        if (q < n) store(out + k + q, y[q]);  // unrolled: y stays in registers
    }
  }
}

// ----------------------------------------------------------------------------------------------
// host side
// ----------------------------------------------------------------------------------------------
bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// float32 / float16 / bfloat16 only (AT_DISPATCH_FLOATING_TYPES_AND2 would add double).
template <typename F>
void dispatch_float(at::ScalarType t, F&& f) {
  switch (t) {
    case at::kFloat:
      f(float{});
      return;
    case at::kHalf:
      f(at::Half{});
      return;
    case at::kBFloat16:
      f(at::BFloat16{});
      return;
    default:
      TORCH_CHECK_TYPE(false, "expected float32, float16 or bfloat16, got ", t);
  }
}

template <typename T>
void launch_fused(const at::Tensor& x, const Spec& s, at::Tensor& payload, at::Tensor& scale,
                  at::Tensor& offset, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  const int64_t slots = s.group_size / V;  // >= 4 (group_size >= 32, V <= 8)
  const int width = static_cast<int>(std::min<int64_t>(32, slots));
  const int r = static_cast<int>(slots / width);
  const bool aligned = aligned16(x.const_data_ptr()) && aligned16(payload.data_ptr());
  const int64_t groups_per_block = (kThreads / 32) * (32 / width);
  const unsigned blocks = static_cast<unsigned>(ceil_div(s.groups, groups_per_block));
  const T* xp = x.const_data_ptr<T>();
  auto* pp = payload.data_ptr<uint8_t>();
  auto* sp = scale.data_ptr<float>();
  auto* op = offset.data_ptr<float>();
#define HB_LAUNCH_FUSED(R)                                                                    \
  quant_groups_kernel<T, R><<<blocks, kThreads, 0, stream>>>(xp, s, width, aligned, pp, sp, op); \
  C10_CUDA_KERNEL_LAUNCH_CHECK()
  switch (r) {
    case 1:
      HB_LAUNCH_FUSED(1);
      break;
    case 2:
      HB_LAUNCH_FUSED(2);
      break;
    case 4:
      HB_LAUNCH_FUSED(4);
      break;
    default:
      HB_LAUNCH_FUSED(8);
      break;
  }
#undef HB_LAUNCH_FUSED
}

template <typename T>
void launch_two_pass(const at::Tensor& x, const Spec& s, at::Tensor& payload, at::Tensor& scale,
                     at::Tensor& offset, cudaStream_t stream) {
  const T* xp = x.const_data_ptr<T>();
  const auto opts = x.options().dtype(at::kByte);
  at::Tensor partial;
  int layout = 0;
  int64_t items = 0, parts = 1;
  if (s.gran != Granularity::kChannel || s.inner >= kColumnInner) {
    // rows: groups (tensor/group) or (outer, channel) rows of `inner` elements
    const int64_t row_len = s.gran == Granularity::kChannel ? s.inner : s.group_size;
    const int64_t rows = s.gran == Granularity::kChannel ? s.outer * s.channels : s.groups;
    parts = std::min<int64_t>(ceil_div(row_len, kPerBlock), 4096);
    const int64_t slice = ceil_div(row_len, parts);
    partial = at::empty({rows * parts * int64_t{sizeof(Acc)}}, opts);
    auto* pa = reinterpret_cast<Acc*>(partial.data_ptr());
    if (rows * parts > 0 && s.numel > 0) {
      partial_minmax_kernel<T><<<static_cast<unsigned>(rows * parts), kThreads, 0, stream>>>(
          xp, s.numel, row_len, parts, slice, pa);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    layout = s.gran == Granularity::kChannel ? 1 : 0;
    items = s.gran == Granularity::kChannel ? s.outer * parts : parts;
    if (s.numel == 0) items = 0;
  } else {
    const int64_t L = s.channels * s.inner;
    const int64_t chunks = std::clamp<int64_t>(s.outer / 16, 1, 65535);
    const int64_t rows_per = ceil_div(s.outer, chunks);
    partial = at::empty({chunks * L * int64_t{sizeof(Acc)}}, opts);
    auto* pa = reinterpret_cast<Acc*>(partial.data_ptr());
    if (L > 0 && s.numel > 0) {
      const dim3 grid(static_cast<unsigned>(ceil_div(L, kThreads)), static_cast<unsigned>(chunks));
      column_minmax_kernel<T><<<grid, kThreads, 0, stream>>>(xp, s.outer, L, rows_per, pa);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    layout = 2;
    items = s.numel > 0 ? chunks * s.inner : 0;
  }
  at::Tensor qparams = at::empty({s.groups * 2}, x.options().dtype(at::kFloat));
  auto* qp = reinterpret_cast<float2*>(qparams.data_ptr<float>());
  params_kernel<<<static_cast<unsigned>(s.groups), kThreads, 0, stream>>>(
      reinterpret_cast<const Acc*>(partial.data_ptr()), s, layout, items, parts,
      scale.data_ptr<float>(), offset.data_ptr<float>(), qp);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (s.numel == 0) return;
  constexpr int V = 16 / sizeof(T);
  const GroupOf go{s.gran, s.gran == Granularity::kGroup ? log2_exact(s.group_size) : 0, s.inner,
                   s.channels};
  const bool aligned = aligned16(xp) && aligned16(payload.data_ptr());
  quant_flat_kernel<T><<<grid_for(ceil_div(s.numel, V)), kThreads, 0, stream>>>(
      xp, s, go, aligned, qp, payload.data_ptr<uint8_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void quantize_out_cuda(const at::Tensor& x_in, int64_t bits, c10::string_view granularity,
                       int64_t group_size, int64_t channel_dim, c10::string_view rounding,
                       int64_t seed, at::Tensor& payload, at::Tensor& scale, at::Tensor& offset) {
  check_float_input(x_in, "x");
  Spec s = make_spec(x_in.sizes(), bits, granularity, group_size, channel_dim);
  s.stochastic = parse_rounding(rounding);
  s.keys = seed_keys(seed);
  check_quant_outputs(s, payload, scale, offset, x_in.device());
  if (s.groups == 0) return;
  TORCH_CHECK_VALUE(s.groups <= int64_t{INT32_MAX}, "quantize: too many groups for one launch: ",
                    s.groups);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream();
  dispatch_float(x.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    constexpr int V = 16 / sizeof(scalar_t);
    if (s.gran == Granularity::kGroup && s.group_size <= int64_t{32} * kMaxSlotsPerLane * V) {
      launch_fused<scalar_t>(x, s, payload, scale, offset, stream);
    } else {
      launch_two_pass<scalar_t>(x, s, payload, scale, offset, stream);
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_cuda(
    const at::Tensor& x, int64_t bits, c10::string_view granularity, int64_t group_size,
    int64_t channel_dim, c10::string_view rounding, int64_t seed) {
  check_float_input(x, "x");
  const Spec s = make_spec(x.sizes(), bits, granularity, group_size, channel_dim);
  parse_rounding(rounding);
  auto payload = at::empty({s.nbytes}, x.options().dtype(at::kByte));
  auto scale = at::empty({s.groups}, x.options().dtype(at::kFloat));
  auto offset = at::empty({s.groups}, x.options().dtype(at::kFloat));
  quantize_out_cuda(x, bits, granularity, group_size, channel_dim, rounding, seed, payload, scale,
                    offset);
  return {payload, scale, offset};
}

void quantize_out_cuda_op(const at::Tensor& x, int64_t bits, c10::string_view granularity,
                          int64_t group_size, int64_t channel_dim, c10::string_view rounding,
                          int64_t seed, at::Tensor payload, at::Tensor scale, at::Tensor offset) {
  quantize_out_cuda(x, bits, granularity, group_size, channel_dim, rounding, seed, payload, scale,
                    offset);
}

void dequantize_out_cuda(const at::Tensor& payload, const at::Tensor& scale,
                         const at::Tensor& offset, at::IntArrayRef shape, int64_t bits,
                         c10::string_view granularity, int64_t group_size, int64_t channel_dim,
                         at::Tensor& out) {
  const Spec s = make_spec(shape, bits, granularity, group_size, channel_dim);
  check_dequant_inputs(s, payload, scale, offset);
  check_out_dtype(out.scalar_type(), "out");
  check_out(out, "out", shape, out.scalar_type(), payload.device());
  if (s.numel == 0) return;
  const c10::cuda::CUDAGuard guard(payload.device());
  const at::Tensor sc = scale.contiguous(), of = offset.contiguous(), pl = payload.contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream();
  const GroupOf go{s.gran, s.gran == Granularity::kGroup ? log2_exact(s.group_size) : 0, s.inner,
                   s.channels};
  const bool aligned = aligned16(pl.const_data_ptr()) && aligned16(out.data_ptr());
  dispatch_float(out.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    dequant_kernel<scalar_t><<<grid_for(ceil_div(s.numel, 8)), kThreads, 0, stream>>>(
        pl.const_data_ptr<uint8_t>(), sc.const_data_ptr<float>(), of.const_data_ptr<float>(), s,
        go, aligned, out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor dequantize_cuda(const at::Tensor& payload, const at::Tensor& scale,
                           const at::Tensor& offset, at::IntArrayRef shape, int64_t bits,
                           c10::string_view granularity, int64_t group_size, int64_t channel_dim,
                           at::ScalarType dtype) {
  check_out_dtype(dtype, "dtype");
  make_spec(shape, bits, granularity, group_size, channel_dim);
  auto out = at::empty(shape, payload.options().dtype(dtype));
  dequantize_out_cuda(payload, scale, offset, shape, bits, granularity, group_size, channel_dim,
                      out);
  return out;
}

void dequantize_out_cuda_op(const at::Tensor& payload, const at::Tensor& scale,
                            const at::Tensor& offset, at::IntArrayRef shape, int64_t bits,
                            c10::string_view granularity, int64_t group_size, int64_t channel_dim,
                            at::Tensor out) {
  dequantize_out_cuda(payload, scale, offset, shape, bits, granularity, group_size, channel_dim,
                      out);
}

}  // namespace

TORCH_LIBRARY_IMPL(hierbench, CUDA, m) {
  m.impl("quantize", &quantize_cuda);
  m.impl("quantize.out", &quantize_out_cuda_op);
  m.impl("dequantize", &dequantize_cuda);
  m.impl("dequantize.out", &dequantize_out_cuda_op);
}

}  // namespace hierbench::quant
