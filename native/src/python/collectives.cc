// Communicator, Work and the tuner's types. Each collective decodes its Python
// arguments here (buffers.h, the reduce op's name) and calls the Communicator, which
// checks them (coll/core/validate.h); a blocking call runs without the GIL.
#include <optional>
#include <string>
#include <utility>

#include <pybind11/stl.h>

#include "coll/core/communicator.h"
#include "python/bind.h"
#include "python/buffers.h"
#include "python/gil.h"

namespace py = pybind11;

namespace uccl::python {

namespace {

struct InOut {
  Buffer in, out;
};

// Input and output of a call; one object passed as both is a single in-place buffer.
InOut in_out(const Communicator& c, py::handle send, py::handle recv, const char* op) {
  if (send.ptr() == recv.ptr()) {
    Buffer b = typed_buffer(send, true, ArgName{c.rank(), op, "buffer"});
    return {b, b};
  }
  return {typed_buffer(send, false, ArgName{c.rank(), op, "input"}),
          typed_buffer(recv, true, ArgName{c.rank(), op, "output"})};
}

ReduceOp op_named(const Communicator& c, const std::string& name, const char* op) {
  return reduce_op_named(ArgCheck{c.rank(), c.world(), op}, name);
}

}  // namespace

void bind_collectives(py::module_& m) {
  py::enum_<DataType>(m, "DataType")
      .value("int8", DataType::Int8)
      .value("uint8", DataType::Uint8)
      .value("int32", DataType::Int32)
      .value("int64", DataType::Int64)
      .value("float16", DataType::Float16)
      .value("bfloat16", DataType::BFloat16)
      .value("float32", DataType::Float32)
      .value("float64", DataType::Float64)
      .value("bool", DataType::Bool);
  py::enum_<ReduceOp>(m, "ReduceOp")
      .value("sum", ReduceOp::Sum)
      .value("prod", ReduceOp::Prod)
      .value("min", ReduceOp::Min)
      .value("max", ReduceOp::Max)
      .value("avg", ReduceOp::Avg);

  py::class_<TuneRule>(m, "TuneRule")
      .def(py::init([](std::string coll, int world, uint64_t max_bytes, std::string algo, uint64_t chunk,
                       std::string transport, int channels, std::string topology, int ranks_per_host,
                       int hosts_per_leaf, std::string link) {
             return TuneRule{std::move(coll),     world,          max_bytes,      std::move(algo),
                             chunk,               std::move(transport), channels, std::move(topology),
                             ranks_per_host,      hosts_per_leaf, std::move(link)};
           }),
           py::arg("collective"), py::arg("world"), py::arg("max_bytes"), py::arg("algo"), py::arg("chunk_bytes") = 0,
           py::arg("transport") = "", py::arg("channels") = 0, py::arg("topology") = "", py::arg("ranks_per_host") = 0,
           py::arg("hosts_per_leaf") = 0, py::arg("link") = "");

  py::class_<CommConfig>(m, "CommConfig")
      .def(py::init<>())
      .def_readwrite("algo", &CommConfig::algo)
      .def_readwrite("chunk_bytes", &CommConfig::chunk_bytes)
      .def_readwrite("channels", &CommConfig::channels)
      .def_readwrite("slots", &CommConfig::slots)
      .def_readwrite("slot_bytes", &CommConfig::slot_bytes)
      .def_readwrite("rules", &CommConfig::rules)
      .def_readwrite("link", &CommConfig::link)
      .def_property(
          "topology", [](const CommConfig& c) { return c.topology.levels; },
          [](CommConfig& c, std::vector<std::vector<int>> levels) { c.topology.levels = std::move(levels); });

  py::class_<Work, std::shared_ptr<Work>>(m, "Work")
      .def("wait", &Work::wait, py::arg("timeout_s"), gil_free())
      .def("test", &Work::test);

  // Every collective takes the Python objects themselves (numpy arrays, torch CPU
  // tensors, buffer-protocol objects) and returns a Work when async_op, else None.
  py::class_<Communicator>(m, "Communicator")
      .def(py::init<std::shared_ptr<Endpoint>, const CommConfig&>())
      .def_property_readonly("rank", &Communicator::rank)
      .def_property_readonly("world", &Communicator::world)
      .def("local_keys", [](const Communicator& c) { return py::bytes(c.local_keys()); })
      .def("connect", &Communicator::connect)
      .def("topology", [](const Communicator& c) { return c.topology().levels; })
      .def("tune_shape",
           [](Communicator& c) {
             const TuneShape s = c.tune_shape();
             py::dict d;
             d["topology"] = s.topology;
             d["ranks_per_host"] = s.ranks_per_host;
             d["hosts_per_leaf"] = s.hosts_per_leaf;
             d["link"] = s.link;
             return d;
           })
      .def("choice",
           [](Communicator& c, const std::string& coll, uint64_t bytes) {
             auto ch = c.choice(coll.c_str(), bytes);
             return py::make_tuple(ch.algo, ch.chunk_bytes, ch.channels);
           })
      .def("all_reduce",
           [](Communicator& c, py::handle send, py::handle recv, const std::string& op, bool async_op) {
             InOut io = in_out(c, send, recv, "all_reduce");
             ReduceOp rop = op_named(c, op, "all_reduce");
             return issue_collective(async_op, [&] { return c.all_reduce(io.in, io.out, rop, async_op); });
           })
      .def("reduce",
           [](Communicator& c, py::handle send, py::handle recv, const std::string& op, int root, bool async_op) {
             InOut io;
             if (c.rank() == root) {
               io = in_out(c, send, recv, "reduce");
             } else {  // only the root writes an output
               io.in = io.out = typed_buffer(send, false, ArgName{c.rank(), "reduce", "input"});
             }
             ReduceOp rop = op_named(c, op, "reduce");
             return issue_collective(async_op, [&] { return c.reduce(io.in, io.out, rop, root, async_op); });
           })
      .def("broadcast",
           [](Communicator& c, py::handle buf, int root, bool async_op) {
             Buffer b = typed_buffer(buf, c.rank() != root, ArgName{c.rank(), "broadcast", "buffer"});
             return issue_collective(async_op, [&] { return c.broadcast(b, root, async_op); });
           })
      .def("all_gather",
           [](Communicator& c, py::handle send, py::handle recv, bool async_op) {
             InOut io = in_out(c, send, recv, "all_gather");
             return issue_collective(async_op, [&] { return c.all_gather(io.in, io.out, async_op); });
           })
      .def("all_gather_v",
           [](Communicator& c, py::handle send, py::handle recv, const SignedCounts& counts,
              const std::optional<SignedCounts>& displs, bool async_op) {
             InOut io = in_out(c, send, recv, "all_gather_v");
             return issue_collective(async_op, [&] { return c.all_gather_v(io.in, io.out, counts, displs, async_op); });
           })
      .def("reduce_scatter",
           [](Communicator& c, py::handle send, py::handle recv, const std::string& op, bool async_op) {
             InOut io = in_out(c, send, recv, "reduce_scatter");
             ReduceOp rop = op_named(c, op, "reduce_scatter");
             return issue_collective(async_op, [&] { return c.reduce_scatter(io.in, io.out, rop, async_op); });
           })
      .def("reduce_scatter_v",
           [](Communicator& c, py::handle send, py::handle recv, const SignedCounts& counts, const std::string& op,
              bool async_op) {
             InOut io = in_out(c, send, recv, "reduce_scatter_v");
             ReduceOp rop = op_named(c, op, "reduce_scatter_v");
             return issue_collective(async_op, [&] { return c.reduce_scatter_v(io.in, io.out, counts, rop, async_op); });
           })
      .def("all_to_all",
           [](Communicator& c, py::handle send, py::handle recv, bool async_op) {
             InOut io = in_out(c, send, recv, "all_to_all");
             return issue_collective(async_op, [&] { return c.all_to_all(io.in, io.out, async_op); });
           })
      .def("all_to_all_v",
           [](Communicator& c, py::handle send, const SignedCounts& send_counts, py::handle recv,
              const SignedCounts& recv_counts, const std::optional<SignedCounts>& send_displs,
              const std::optional<SignedCounts>& recv_displs, bool async_op) {
             InOut io = in_out(c, send, recv, "all_to_all_v");
             return issue_collective(async_op, [&] {
               return c.all_to_all_v(io.in, send_counts, send_displs, io.out, recv_counts, recv_displs, async_op);
             });
           })
      .def("gather",
           [](Communicator& c, py::handle send, py::handle recv, int root, bool async_op) {
             // Only the root has an output.
             Buffer in;
             std::optional<Buffer> out;
             if (c.rank() == root && !recv.is_none()) {
               InOut io = in_out(c, send, recv, "gather");
               in = io.in, out = io.out;
             } else {
               in = typed_buffer(send, false, ArgName{c.rank(), "gather", "input"});
             }
             return issue_collective(async_op, [&] { return c.gather(in, out, root, async_op); });
           })
      .def("scatter",
           [](Communicator& c, py::handle send, py::handle recv, int root, bool async_op) {
             // Only the root has an input.
             std::optional<Buffer> in;
             Buffer out;
             if (c.rank() == root && !send.is_none()) {
               InOut io = in_out(c, send, recv, "scatter");
               in = io.in, out = io.out;
             } else {
               out = typed_buffer(recv, true, ArgName{c.rank(), "scatter", "output"});
             }
             return issue_collective(async_op, [&] { return c.scatter(in, out, root, async_op); });
           })
      .def("barrier",
           [](Communicator& c, bool async_op) {
             return issue_collective(async_op, [&] { return c.barrier(async_op); });
           });
}

}  // namespace uccl::python
