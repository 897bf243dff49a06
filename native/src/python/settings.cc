// What uccl/config.py asks of the native core to check settings at start-up: the
// net channel's packet-math limits and the collectives' algorithm names, so neither
// is written down twice.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "coll/core/tuner.h"
#include "transport/net/net_transport.h"

namespace py = pybind11;

void bind_settings(py::module_& m) {
  m.attr("MIN_MTU") = uccl::kMinMtu;
  m.attr("MAX_MTU") = uccl::kMaxMtu;
  m.attr("MAX_PATHS") = uccl::kMaxPaths;
  m.def("algorithms", &uccl::Tuner::algorithms, "Algorithm names UCCL_ALGO may give (besides 'auto').");
}
