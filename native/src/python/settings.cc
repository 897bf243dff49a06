// What uccl/config.py asks of the native core to check settings at start-up: the
// net channel's packet-math limits, the congestion controls' and the collectives'
// algorithm names, so none is written down twice.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "coll/core/tuner.h"
#include "python/bind.h"
#include "transport/endpoint.h"
#include "transport/net/cc/cc.h"
#include "transport/net/limits.h"

namespace py = pybind11;

namespace uccl::python {

void bind_settings(py::module_& m) {
  m.attr("MIN_MTU") = uccl::kMinMtu;
  m.attr("MAX_MTU") = uccl::kMaxMtu;
  m.attr("MAX_PATHS") = uccl::kMaxPaths;
  m.attr("MIN_RING_BYTES") = uccl::kMinRingBytes;
  m.def("algorithms", &uccl::Tuner::algorithms, "Algorithm names UCCL_ALGO may give (besides 'auto').");
  m.def("congestion_controls", &uccl::net::cc_names, "Congestion-control names UCCL_CC may give.");
}

}  // namespace uccl::python
