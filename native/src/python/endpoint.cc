// Endpoint: its configuration, registered regions, one- and two-sided operations and
// their completions. Operations that may block run without the GIL.
#include <string>
#include <vector>

#include <pybind11/stl.h>

#include "common/errors.h"
#include "python/bind.h"
#include "python/gil.h"
#include "python/hold.h"
#include "python/stats.h"
#include "transport/endpoint.h"

namespace py = pybind11;

namespace uccl::python {

namespace {

// What keeps an operation's local memory alive until it completes: `keep` (the
// region or buffer the caller passed), with a buffer export when it has one.
Endpoint::Hold keep_alive(py::handle keep) {
  if (keep.is_none()) return nullptr;
  if (PyObject_CheckBuffer(keep.ptr())) {
    const Py_buffer* view = nullptr;
    if (auto h = hold_export(keep, PyBUF_ANY_CONTIGUOUS, &view)) return h;
    PyErr_Clear();
  }
  return hold(keep);
}

// A block of the endpoint's shared arena, exported as a writable byte buffer; it keeps
// the endpoint (so its segment stays mapped) and returns the block when collected.
struct SharedBlock {
  std::shared_ptr<Endpoint> ep;
  char* data;
  uint64_t bytes;
  ~SharedBlock() { ep->free_shared(data); }
};

}  // namespace

void bind_endpoint(py::module_& m) {
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
      .def_readwrite("swift_target_us", &NetConfig::swift_target_us)
      .def_readwrite("max_retries", &NetConfig::max_retries);

  py::class_<EndpointConfig>(m, "EndpointConfig")
      .def(py::init<>())
      .def_readwrite("rank", &EndpointConfig::rank)
      .def_readwrite("world", &EndpointConfig::world)
      .def_readwrite("secret", &EndpointConfig::secret)
      .def_readwrite("transport", &EndpointConfig::transport)
      .def_readwrite("host_tag", &EndpointConfig::host_tag)
      .def_readwrite("timeout_s", &EndpointConfig::timeout_s)
      .def_readwrite("spin_us", &EndpointConfig::spin_us)
      .def_readwrite("yield_us", &EndpointConfig::yield_us)
      .def_readwrite("ring_bytes", &EndpointConfig::ring_bytes)
      .def_readwrite("arena_bytes", &EndpointConfig::arena_bytes)
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

  py::class_<SharedBlock>(m, "SharedBlock", py::buffer_protocol())
      .def_buffer([](SharedBlock& b) {
        return py::buffer_info(b.data, 1, py::format_descriptor<uint8_t>::format(), 1, {py::ssize_t(b.bytes)},
                               {py::ssize_t(1)});
      })
      .def("__len__", [](const SharedBlock& b) { return b.bytes; });

  py::class_<Endpoint, std::shared_ptr<Endpoint>>(m, "Endpoint")
      .def(py::init<const EndpointConfig&>())
      .def_property_readonly("rank", &Endpoint::rank)
      .def_property_readonly("world", &Endpoint::world)
      .def("descriptor", [](const Endpoint& e) { return py::bytes(e.descriptor()); })
      .def("connect",
           [](Endpoint& e, const std::vector<std::string>& d) {
             GilRelease nogil;
             e.connect(d);
           })
      .def("channel_kind", &Endpoint::channel_kind)
      .def("refused_by_us", &Endpoint::refused_by_us)
      .def("register_region", &Endpoint::register_region)
      .def(
          "alloc_shared",
          [](const std::shared_ptr<Endpoint>& e, uint64_t bytes) -> py::object {
            void* p = e->alloc_shared(bytes);
            if (!p) return py::none();
            return py::cast(new SharedBlock{e, static_cast<char*>(p), bytes}, py::return_value_policy::take_ownership);
          },
          "bytes in the shared arena that same-host peers write into with memcpy; None when it is full")
      .def("deregister_region", &Endpoint::deregister_region)
      // Each operation takes `keep`: what must stay alive until it completes. The
      // endpoint holds it that long whether or not the caller keeps the request. The
      // holder is released here, with the GIL, when the operation finished at once.
      .def(
          "write",
          [](Endpoint& e, int peer, uint64_t lkey, uint64_t loff, uint64_t len, uint64_t rkey, uint64_t roff,
             bool with_imm, uint32_t imm, py::handle keep) {
            Endpoint::Hold h = keep_alive(keep);
            GilRelease nogil;
            return e.write(peer, lkey, loff, len, rkey, roff, with_imm, imm, h);
          },
          py::arg("peer"), py::arg("lkey"), py::arg("loff"), py::arg("len"), py::arg("rkey"), py::arg("roff"),
          py::arg("with_imm"), py::arg("imm"), py::arg("keep") = py::none())
      .def(
          "read",
          [](Endpoint& e, int peer, uint64_t lkey, uint64_t loff, uint64_t len, uint64_t rkey, uint64_t roff,
             py::handle keep) {
            Endpoint::Hold h = keep_alive(keep);
            GilRelease nogil;
            return e.read(peer, lkey, loff, len, rkey, roff, h);
          },
          py::arg("peer"), py::arg("lkey"), py::arg("loff"), py::arg("len"), py::arg("rkey"), py::arg("roff"),
          py::arg("keep") = py::none())
      .def(
          "send",
          [](Endpoint& e, int peer, uint64_t addr, uint64_t len, uint64_t tag, py::handle keep) {
            Endpoint::Hold h = keep_alive(keep);
            GilRelease nogil;
            return e.send(peer, reinterpret_cast<const void*>(addr), len, tag, h);
          },
          py::arg("peer"), py::arg("addr"), py::arg("len"), py::arg("tag"), py::arg("keep") = py::none())
      .def(
          "post_recv",
          [](Endpoint& e, int src, uint64_t addr, uint64_t cap, uint64_t tag, py::handle keep) {
            Endpoint::Hold h = keep_alive(keep);
            GilRelease nogil;
            return e.post_recv(src, reinterpret_cast<void*>(addr), cap, tag, h);
          },
          py::arg("src"), py::arg("addr"), py::arg("cap"), py::arg("tag"), py::arg("keep") = py::none())
      .def("detach", &Endpoint::detach, "nobody will wait for this request (its completion is dropped)")
      .def("wait", &Endpoint::wait, gil_free())
      .def("test", &Endpoint::test, gil_free())
      .def("wait_remote_write", &Endpoint::wait_remote_write, gil_free())
      .def("poll_remote_writes",
           [](Endpoint& e, size_t max) {
             std::vector<Completion> out;
             {
               GilRelease nogil;
               out = e.poll_remote_writes(max);
             }
             release_dropped_holds();  // operations this progress completed
             return out;
           })
      .def("stats", [](Endpoint& e) { return stats_to_dict(e.stats()); });
}

}  // namespace uccl::python
