// The only file that knows Python: exposes the native core as uccl._native.
// Every call that may block releases the GIL.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "common/errors.h"
#include "transport/endpoint.h"
#include "tools/pingpong.h"

namespace py = pybind11;
using namespace uccl;

namespace {

// Native errors become the classes defined in uccl/errors.py.
void translate(const Error& e) {
  static const char* names[] = {"UcclError", "UcclTimeoutError", "PeerFailureError",
                                "AccessError", "InvalidArgumentError", "MismatchError"};
  py::object cls = py::module_::import("uccl.errors").attr(names[int(e.kind())]);
  PyErr_SetString(cls.ptr(), e.what());
}

py::dict stats_to_dict(const Endpoint::Stats& s) {
  py::list peers;
  for (const auto& c : s.peers) {
    py::dict d;
    d["writes"] = c.writes;
    d["bytes_written"] = c.bytes_written;
    d["reads"] = c.reads;
    d["bytes_read"] = c.bytes_read;
    d["msgs_sent"] = c.msgs_sent;
    d["bytes_sent"] = c.bytes_sent;
    d["msgs_received"] = c.msgs_received;
    d["bytes_received"] = c.bytes_received;
    d["remote_writes"] = c.remote_writes;
    peers.append(d);
  }
  py::dict out;
  out["peers"] = peers;
  out["drops"] = s.drops;
  return out;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "uccl native core";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      translate(e);
    }
  });

  m.attr("ACCESS_REMOTE_WRITE") = uint32_t(kRemoteWrite);
  m.attr("ACCESS_REMOTE_READ") = uint32_t(kRemoteRead);
  m.attr("ANY_SOURCE") = kAnySource;

  py::class_<NetConfig>(m, "NetConfig")
      .def(py::init<>())
      .def_readwrite("ifname", &NetConfig::ifname)
      .def_readwrite("addr", &NetConfig::addr)
      .def_readwrite("num_paths", &NetConfig::num_paths)
      .def_readwrite("cc", &NetConfig::cc)
      .def_readwrite("mtu", &NetConfig::mtu)
      .def_readwrite("rto_ms", &NetConfig::rto_ms)
      .def_readwrite("max_retries", &NetConfig::max_retries);

  py::class_<EndpointConfig>(m, "EndpointConfig")
      .def(py::init<>())
      .def_readwrite("rank", &EndpointConfig::rank)
      .def_readwrite("world", &EndpointConfig::world)
      .def_readwrite("secret", &EndpointConfig::secret)
      .def_readwrite("transport", &EndpointConfig::transport)
      .def_readwrite("timeout_s", &EndpointConfig::timeout_s)
      .def_readwrite("spin_us", &EndpointConfig::spin_us)
      .def_readwrite("ring_bytes", &EndpointConfig::ring_bytes)
      .def_readwrite("inline_max", &EndpointConfig::inline_max)
      .def_readwrite("max_regions", &EndpointConfig::max_regions)
      .def_readwrite("net", &EndpointConfig::net);

  py::enum_<Opcode>(m, "Opcode")
      .value("WRITE", Opcode::Write)
      .value("READ", Opcode::Read)
      .value("SEND", Opcode::Send)
      .value("RECV", Opcode::Recv)
      .value("REMOTE_WRITE", Opcode::RemoteWrite);

  py::class_<Endpoint::Posted>(m, "Posted")
      .def_readonly("wr_id", &Endpoint::Posted::wr_id)
      .def_readonly("done", &Endpoint::Posted::done);

  py::class_<Completion>(m, "Completion")
      .def(py::init([](Opcode op, int peer, uint64_t len, uint64_t tag) {
             Completion c;
             c.opcode = op;
             c.peer = peer;
             c.len = len;
             c.tag = tag;
             return c;
           }),
           py::arg("opcode"), py::arg("peer"), py::arg("len"), py::arg("tag") = 0)
      .def_readonly("wr_id", &Completion::wr_id)
      .def_readonly("opcode", &Completion::opcode)
      .def_readonly("peer", &Completion::peer)
      .def_readonly("imm", &Completion::imm)
      .def_readonly("tag", &Completion::tag)
      .def_readonly("len", &Completion::len)
      .def_readonly("offset", &Completion::offset)
      .def_readonly("key", &Completion::key)
      .def("__repr__", [](const Completion& c) {
        return format_msg("Completion(opcode=", int(c.opcode), ", peer=", c.peer, ", len=", c.len, ", imm=", c.imm,
                          ", tag=", c.tag, ")");
      });

  using gil_free = py::call_guard<py::gil_scoped_release>;
  py::class_<Endpoint>(m, "Endpoint")
      .def(py::init<const EndpointConfig&>())
      .def_property_readonly("rank", &Endpoint::rank)
      .def_property_readonly("world", &Endpoint::world)
      .def("descriptor", [](const Endpoint& e) { return py::bytes(e.descriptor()); })
      .def("connect",
           [](Endpoint& e, const std::vector<std::string>& d) {
             py::gil_scoped_release nogil;
             e.connect(d);
           })
      .def("channel_kind", &Endpoint::channel_kind)
      .def("register_region", &Endpoint::register_region)
      .def("deregister_region", &Endpoint::deregister_region)
      .def("write", &Endpoint::write, gil_free())
      .def("read", &Endpoint::read, gil_free())
      .def(
          "send",
          [](Endpoint& e, int peer, uint64_t addr, uint64_t len, uint64_t tag) {
            return e.send(peer, reinterpret_cast<const void*>(addr), len, tag);
          },
          gil_free())
      .def(
          "post_recv",
          [](Endpoint& e, int src, uint64_t addr, uint64_t cap, uint64_t tag) {
            return e.post_recv(src, reinterpret_cast<void*>(addr), cap, tag);
          },
          gil_free())
      .def("wait", &Endpoint::wait, gil_free())
      .def("test", &Endpoint::test, gil_free())
      .def("wait_remote_write", &Endpoint::wait_remote_write, gil_free())
      .def("poll_remote_writes", &Endpoint::poll_remote_writes, gil_free())
      .def("stats", [](Endpoint& e) { return stats_to_dict(e.stats()); });

  m.def("pingpong_one_way_us", &pingpong_one_way_us, py::arg("endpoint"), py::arg("peer"), py::arg("initiator"),
        py::arg("lkey"), py::arg("rkey"), py::arg("size"), py::arg("iters"), py::arg("warmup") = 100,
        py::call_guard<py::gil_scoped_release>());
}
