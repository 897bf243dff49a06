// The parts of uccl._native, one per subject; module.cc puts them together.
#pragma once
#include <pybind11/pybind11.h>

namespace uccl::python {

void bind_settings(pybind11::module_& m);     // settings.cc: the limits and names settings are checked against
void bind_buffers(pybind11::module_& m);      // buffers.cc: describe_buffer
void bind_endpoint(pybind11::module_& m);     // endpoint.cc: Endpoint, its config, regions, completions
void bind_collectives(pybind11::module_& m);  // collectives.cc: Communicator, Work, tuning rules
void bind_tools(pybind11::module_& m);        // tools.cc: the `tools` submodule (tests and benchmarks)
void bind_moe(pybind11::module_& m);          // moe.cc: the `moe` submodule (low-latency MoE row work)

}  // namespace uccl::python
