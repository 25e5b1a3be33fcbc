// Python bindings of the transfer engine (hierbench._C.transfer). Called once from
// csrc/registration.cpp's PYBIND11_MODULE; everything else of the engine is plain C++.
#pragma once

#include <pybind11/pybind11.h>

namespace hierbench::transfer {

void bind(pybind11::module_& m);

}  // namespace hierbench::transfer
