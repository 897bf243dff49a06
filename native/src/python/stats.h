// An endpoint's counters as nested Python dicts (Endpoint.stats()).
#pragma once
#include <pybind11/pybind11.h>

#include "transport/endpoint.h"

namespace uccl::python {

pybind11::dict stats_to_dict(const Endpoint::Stats& s);

}  // namespace uccl::python
