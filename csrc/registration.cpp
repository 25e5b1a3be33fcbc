// Every op schema of the `hierbench` namespace, one per line, in this one file. The CPU and CUDA
// kernels register themselves in their own files with TORCH_LIBRARY_IMPL; fake (meta) kernels
// live in hierbench/ops/_fake.py. Loading the module (import hierbench._C) runs all registrations.
#include <torch/extension.h>

#include <string>
#include <vector>

#include "checksum/crc32.h"
#include "common/py_buffer.h"
#include "quant/quant_cpu_avx512.h"
#include "transfer/bindings.h"

TORCH_LIBRARY(hierbench, m) {
  // Per-group minimum and maximum of x.flatten() in groups of `group_size` consecutive elements
  // (the last group may be partial). Returns two float32 tensors of ceil(numel / group_size).
  // NaN propagates: a group holding a NaN gets NaN for both.
  m.def("group_minmax(Tensor x, int group_size) -> (Tensor, Tensor)");
  m.def("group_minmax.out(Tensor x, int group_size, *, Tensor(a!) min, Tensor(b!) max) -> ()");

  // Min/max affine quantization of x.flatten() (float32/16, bfloat16) to `bits` in {2, 4, 8}.
  // granularity: "tensor" (1 group), "channel" (x.shape[channel_dim] groups), "group" (runs of
  // group_size consecutive elements, a power of two >= 32); arguments a granularity does not use
  // are ignored. rounding: "nearest" (half to even) or "stochastic" (counter-based, keyed by
  // (seed, flat index)). payload: uint8, ceil(numel * bits / 8) bytes, code k at bit k*bits,
  // lowest bits first; scale, offset: float32 (G,). A group holding NaN/inf gets NaN scale and
  // offset and codes 0. Exact formula: hierbench/ops/reference.py::quantize.
  m.def("quantize(Tensor x, int bits, str granularity, int group_size, int channel_dim, str rounding, int seed) -> (Tensor payload, Tensor scale, Tensor offset)");
  m.def("quantize.out(Tensor x, int bits, str granularity, int group_size, int channel_dim, str rounding, int seed, *, Tensor(a!) payload, Tensor(b!) scale, Tensor(c!) offset) -> ()");
  // The inverse: offset + code * scale (float32, unfused), converted to dtype (nearest even).
  m.def("dequantize(Tensor payload, Tensor scale, Tensor offset, SymInt[] shape, int bits, str granularity, int group_size, int channel_dim, ScalarType dtype) -> Tensor");
  m.def("dequantize.out(Tensor payload, Tensor scale, Tensor offset, SymInt[] shape, int bits, str granularity, int group_size, int channel_dim, *, Tensor(a!) out) -> ()");
}

namespace {

pybind11::dict build_info() {
  pybind11::dict d;
  d["version"] = HIERBENCH_VERSION;
#ifdef HIERBENCH_WITH_CUDA
  d["with_cuda"] = true;
  d["nvcc_version"] = HIERBENCH_NVCC_VERSION;
#else
  d["with_cuda"] = false;
  d["nvcc_version"] = pybind11::none();
#endif
#if defined(__GNUC__) && !defined(__clang__)
  d["compiler"] = std::string("gcc ") + __VERSION__;
#else
  d["compiler"] = std::string(__VERSION__);
#endif
  d["torch_version"] = TORCH_VERSION;
  d["openmp"] =
#ifdef _OPENMP
      true;
#else
      false;
#endif
  return d;
}

// Which CPU quantize kernel handles float inputs of up to 16 MiB in groups of 32-256 with round to
// nearest: "avx512" (the hand-written kernel of quant/quant_cpu_avx512.cpp) or "portable" (the
// vectorised loops of quant_cpu.cpp, which do everything else). Both give the same bits.
std::string cpu_kernel() { return hierbench::quant::avx512::enabled() ? "avx512" : "portable"; }

// The kernel that quantize(x, bits, granularity, group_size, ..., rounding) runs on the CPU.
// Per-tensor (and groups over 64 Ki elements) and per-channel with rows of a multiple of 64
// contiguous elements take the AVX-512 span kernel (min/max and codes) where it is enabled.
std::string cpu_kernel_for(const at::Tensor& x, int64_t bits, const std::string& granularity,
                           int64_t group_size, const std::string& rounding, int64_t channel_dim) {
  namespace avx512 = hierbench::quant::avx512;
  const auto in = avx512::input_of(x.scalar_type());
  const bool stochastic = rounding == "stochastic";
  const int b = static_cast<int>(bits);
  bool used = false;
  if (granularity == "tensor") {
    used = x.numel() > (int64_t{1} << 16) && avx512::span_used_for(in, b, stochastic);
  } else if (granularity == "channel") {
    const int64_t nd = x.dim();
    const int64_t d = channel_dim < 0 ? channel_dim + nd : channel_dim;
    int64_t inner = 1;
    for (int64_t i = d + 1; i < nd; ++i) inner *= x.size(i);
    used = nd > 0 && d >= 0 && d < nd && inner >= 64 && inner % 64 == 0 &&
           avx512::span_used_for(in, b, stochastic);
  } else if (group_size > (int64_t{1} << 16)) {
    used = avx512::span_used_for(in, b, stochastic);
  } else {
    used = avx512::used_for(in, true, group_size, b, stochastic, x.numel());
  }
  return used ? "avx512" : "portable";
}

std::string set_cpu_kernel(const std::string& name) {
  namespace avx512 = hierbench::quant::avx512;
  TORCH_CHECK_VALUE(name == "avx512" || name == "portable",
                    "cpu kernel must be 'avx512' or 'portable', got '", name, "'");
  TORCH_CHECK_VALUE(name == "portable" || avx512::supported(),
                    "the avx512 kernel is not available: it needs a GCC x86-64 build and a CPU "
                    "with AVX-512 F/BW/DQ/VL/VBMI");
  return avx512::set_enabled(name == "avx512") ? "avx512" : "portable";
}

std::vector<std::string> available_cpu_kernels() {
  if (hierbench::quant::avx512::supported()) return {"avx512", "portable"};
  return {"portable"};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "hierbench native core: tensor ops (torch.ops.hierbench.*) and the transfer engine";
  m.def("build_info", &build_info, "How this extension was built (CUDA, compiler, torch).");
  m.def("cpu_kernel", &cpu_kernel,
        "The CPU quantize kernel in use for inputs of up to 16 MiB in groups of 32-256, "
        "round to nearest: 'avx512' or 'portable' (same bits; HIERBENCH_CPU_KERNEL=portable, "
        "read at the first call, selects the latter).");
  m.def("cpu_kernel_for", &cpu_kernel_for, pybind11::arg("x"), pybind11::arg("bits"),
        pybind11::arg("granularity"), pybind11::arg("group_size"), pybind11::arg("rounding"),
        pybind11::arg("channel_dim") = 1,
        "The CPU kernel that quantize(x, bits, granularity, group_size, channel_dim, rounding) "
        "runs.");
  m.def("available_cpu_kernels", &available_cpu_kernels,
        "The CPU quantize kernels this build and CPU can run: ['avx512', 'portable'] or "
        "['portable'].");
  m.def("set_cpu_kernel", &set_cpu_kernel, pybind11::arg("name"),
        "Select the CPU quantize kernel ('avx512' or 'portable'); returns the previous one. "
        "ValueError for another name, or for 'avx512' where it is not available.");
  m.def(
      "crc32",
      [](const pybind11::handle& data, uint32_t value) {
        const hierbench::PyBufferView b(data, false);
        if (b.size() < (64u << 10)) return hierbench::checksum::crc32(b.data(), b.size(), value);
        pybind11::gil_scoped_release release;  // the view stays valid: we hold its reference
        return hierbench::checksum::crc32(b.data(), b.size(), value);
      },
      pybind11::arg("data"), pybind11::arg("value") = 0,
      "CRC-32 as zlib.crc32(data, value) computes it (polynomial 0xEDB88320), with the kernel "
      "crc32_kernel() names; releases the GIL for buffers of 64 KiB and more.");
  m.def(
      "crc32_with",
      [](const std::string& kernel, const pybind11::handle& data, uint32_t value) {
        const hierbench::PyBufferView b(data, false);
        return hierbench::checksum::crc32_with(kernel, b.data(), b.size(), value);
      },
      pybind11::arg("kernel"), pybind11::arg("data"), pybind11::arg("value") = 0,
      "crc32() with a named kernel from available_crc32_kernels() (tests, benchmarks).");
  m.def("crc32_kernel", &hierbench::checksum::crc32_kernel,
        "The CRC-32 kernel crc32() uses: 'vpclmul', 'pclmul' or 'portable'.");
  m.def("available_crc32_kernels", &hierbench::checksum::available_crc32_kernels,
        "The CRC-32 kernels this build and CPU can run, fastest first.");
  hierbench::transfer::bind(m);  // hierbench._C.transfer: the transfer engine (csrc/transfer/)
}
