// pybind11 entry point of spice._C: the compiled fast paths of spice.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace spice::verify {
void register_bindings(py::module_& m);
}
namespace spice::scoring {
void register_bindings(py::module_& m);
}

namespace {

bool built_with_cuda() {
#ifdef SPICE_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "Compiled fast paths of spice (answer verification, reward scoring).";
  m.def("built_with_cuda", &built_with_cuda, "Whether the CUDA sources were compiled into this module.");
  spice::verify::register_bindings(m);
  spice::scoring::register_bindings(m);
}
