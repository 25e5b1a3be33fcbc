// A contiguous buffer of any Python exporter (bytes, bytearray, memoryview, numpy), held until
// destroyed (with the GIL held). A non-contiguous exporter raises BufferError, a non-buffer
// TypeError, as for the buffer arguments of Python's own zlib and hashlib.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>

namespace hierbench {

class PyBufferView {
 public:
  PyBufferView(const pybind11::handle& obj, bool writable) {
    if (PyObject_GetBuffer(obj.ptr(), &view_, PyBUF_SIMPLE | (writable ? PyBUF_WRITABLE : 0))) {
      throw pybind11::error_already_set();
    }
  }
  ~PyBufferView() { PyBuffer_Release(&view_); }
  PyBufferView(const PyBufferView&) = delete;
  PyBufferView& operator=(const PyBufferView&) = delete;
  const void* data() const { return view_.buf; }
  uint64_t size() const { return static_cast<uint64_t>(view_.len); }

 private:
  Py_buffer view_{};
};

}  // namespace hierbench
