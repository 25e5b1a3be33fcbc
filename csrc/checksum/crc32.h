// CRC-32 as in zlib, zip, PNG and Ethernet (reflected polynomial 0xEDB88320, initial value and
// final XOR 0xFFFFFFFF): crc32("123456789") == 0xCBF43926, and crc32(data, n, crc) continues a
// running value exactly like Python's zlib.crc32(data, crc), so
// crc32(b, crc32(a)) == crc32(a + b). The activation codec's frames are checked with it.
//
// Three kernels give the same value; the fastest one the CPU supports is chosen at the first call:
//   "vpclmul"  folds 256 bytes per step with 512-bit carry-less multiplies (x86-64 with
//              AVX-512 F/VL and VPCLMULQDQ: AMD Zen 4, Intel Ice Lake and later);
//   "pclmul"   folds 64 bytes per step with 128-bit ones (x86-64 with PCLMULQDQ and SSE4.1:
//              every x86-64 CPU since about 2010);
//   "portable" slicing-by-8 tables over four interleaved streams (any CPU).
// benchmarks/bench_checksum.py times each against zlib.crc32 and a memcpy of the same bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace hierbench::checksum {

uint32_t crc32(const void* data, size_t n, uint32_t crc = 0);

// The kernel crc32() uses: "vpclmul", "pclmul" or "portable".
const char* crc32_kernel();

// The kernels this build and CPU can run, fastest first.
std::vector<std::string> available_crc32_kernels();

// crc32() with a named kernel (for tests and benchmarks); std::invalid_argument for a name that
// is not in available_crc32_kernels().
uint32_t crc32_with(const std::string& kernel, const void* data, size_t n, uint32_t crc = 0);

}  // namespace hierbench::checksum
