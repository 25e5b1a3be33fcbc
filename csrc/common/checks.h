// Argument checks shared by the CPU and CUDA implementations, so both raise the same error with
// the same text. Every message names the argument, what was expected and what was given.
//   TORCH_CHECK_VALUE -> Python ValueError, TORCH_CHECK_TYPE -> Python TypeError.
#pragma once

#include <ATen/ATen.h>

namespace hierbench {

inline void check_float_input(const at::Tensor& x, const char* name) {
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kHalf ||
                       x.scalar_type() == at::kBFloat16,
                   name, " must be float32, float16 or bfloat16, got ", x.scalar_type());
}

inline void check_group_size(int64_t group_size, const char* name = "group_size") {
  TORCH_CHECK_VALUE(group_size > 0, name, " must be positive, got ", group_size);
}

inline void check_same_device(const at::Tensor& a, const char* an, const at::Tensor& b,
                              const char* bn) {
  TORCH_CHECK_VALUE(a.device() == b.device(), an, " and ", bn,
                    " must be on the same device, got ", a.device(), " and ", b.device());
}

// An `out=` buffer must already have the exact shape and dtype: hot loops reuse buffers, and a
// silent resize would hide a caller's bug.
inline void check_out(const at::Tensor& out, const char* name, at::IntArrayRef shape,
                      at::ScalarType dtype, const at::Device& device) {
  TORCH_CHECK_VALUE(out.sizes() == shape, name, " must have shape ", shape, ", got ", out.sizes());
  TORCH_CHECK_TYPE(out.scalar_type() == dtype, name, " must be ", dtype, ", got ",
                   out.scalar_type());
  TORCH_CHECK_VALUE(out.device() == device, name, " must be on ", device, ", got ", out.device());
  TORCH_CHECK_VALUE(out.is_contiguous(), name, " must be contiguous");
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace hierbench
