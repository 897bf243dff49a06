// uccl._native.tools: hooks for tests and benchmarks, not part of the API.
#include <utility>
#include <vector>

#include <pybind11/stl.h>

#include "coll/core/communicator.h"
#include "python/bind.h"
#include "python/gil.h"
#include "tools/pingpong.h"
#include "transport/net/reverse_delay.h"

namespace py = pybind11;

namespace uccl::python {

void bind_tools(py::module_& m) {
  py::module_ tools = m.def_submodule("tools", "Hooks for tests and benchmarks; not part of the API.");

  // perf/p2p_perf.py: one-way latency of writes-with-immediate timed in native code.
  tools.def("pingpong_one_way_us", &pingpong_one_way_us, py::arg("endpoint"), py::arg("peer"), py::arg("initiator"),
            py::arg("lkey"), py::arg("rkey"), py::arg("size"), py::arg("iters"), py::arg("warmup") = 100, gil_free());

  // tests/transport/test_reverse_delay.py: the net channel's return-path queueing
  // estimate over a trace of (our arrival clock, the acker's departure clock) pairs.
  tools.def("reverse_delay_trace", [](const std::vector<std::pair<uint64_t, uint64_t>>& trace) {
    net::ReverseDelay r;
    std::vector<uint64_t> out;
    out.reserve(trace.size());
    for (const auto& [now, sent] : trace) out.push_back(r.sample(now, sent));
    return out;
  });

  // perf/allreduce_latency_breakdown.py: all_reduce on raw addresses, without decoding
  // Python buffers (the arguments are still checked, as for any C++ caller).
  tools.def("all_reduce_at_addresses",
            [](Communicator& c, uint64_t send, uint64_t recv, uint64_t count, DataType t, ReduceOp op, bool async_op) {
              return issue_collective(async_op, [&] {
                return c.all_reduce(Buffer{send, count, t}, Buffer{recv, count, t}, op, async_op);
              });
            },
            py::arg("comm"), py::arg("send"), py::arg("recv"), py::arg("count"), py::arg("dtype"), py::arg("op"),
            py::arg("async_op") = false);
}

}  // namespace uccl::python
