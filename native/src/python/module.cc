// The only file that knows Python: exposes the native core as uccl._native.
// Every call that may block releases the GIL (GilRelease).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <optional>

#include "coll/core/communicator.h"
#include "common/errors.h"
#include "transport/endpoint.h"
#include "transport/net/reverse_delay.h"
#include "tools/pingpong.h"

namespace py = pybind11;
using namespace uccl;

void bind_settings(py::module_& m);  // settings.cc

namespace {

// Releases the GIL around a blocking call. A daemon thread still blocked here when the
// interpreter shuts down must not take the GIL back: CPython would end it with
// pthread_exit, whose unwinding through this destructor aborts the whole process
// ("terminate called without an active exception"). It parks instead, as CPython 3.14
// parks daemon threads itself; the process is exiting anyway.
class GilRelease {
 public:
  GilRelease() : state_(PyEval_SaveThread()) {}
  ~GilRelease() {
    while (finalizing()) std::this_thread::sleep_for(std::chrono::hours(1));
    PyEval_RestoreThread(state_);
  }
  GilRelease(const GilRelease&) = delete;
  GilRelease& operator=(const GilRelease&) = delete;

 private:
  static bool finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing();
#else
    return _Py_IsFinalizing();
#endif
  }
  PyThreadState* state_;
};
using gil_free = py::call_guard<GilRelease>;

// Native errors become the classes defined in uccl/errors.py.
void translate(const Error& e) {
  static const char* names[] = {"UcclError", "UcclTimeoutError", "PeerFailureError",
                                "AccessError", "InvalidArgumentError", "MismatchError"};
  py::object cls = py::module_::import("uccl.errors").attr(names[int(e.kind())]);
  // Messages may quote bytes from a peer: never let a decoding error hide the real one.
  std::string msg = e.what();
  py::object text = py::reinterpret_steal<py::object>(PyUnicode_DecodeUTF8(msg.data(), Py_ssize_t(msg.size()), "replace"));
  PyErr_SetObject(cls.ptr(), text.ptr());
}

// A collective runs inline (in issue order, GIL released) or queued to the
// communicator's worker thread, returning a Work handle.
template <typename Fn>
std::shared_ptr<Work> dispatch(Communicator& c, bool async_op, Fn&& fn) {
  if (async_op) return c.submit(std::forward<Fn>(fn));
  GilRelease nogil;
  c.run_in_order(fn);
  return nullptr;
}

using Counts = std::vector<uint64_t>;

// A Python buffer as the collectives see it: numpy arrays and other buffer-protocol
// objects through PyObject_GetBuffer, torch CPU tensors through data_ptr(). Done
// here, in one native call, because it is on every collective's path.
struct CallBuffer {
  uint64_t addr = 0;
  uint64_t count = 0;
  DataType dtype = DataType::Uint8;
};

DataType dtype_from_format(const char* fmt, Py_ssize_t itemsize, bool* ok) {
  *ok = true;
  while (*fmt == '@' || *fmt == '=' || *fmt == '<') ++fmt;
  switch (fmt[0] == 0 || fmt[1] != 0 ? 0 : fmt[0]) {
    case 'b': return DataType::Int8;
    case 'B': return DataType::Uint8;
    case '?': return DataType::Bool;
    case 'e': return DataType::Float16;
    case 'f': return DataType::Float32;
    case 'd': return DataType::Float64;
    case 'i':
    case 'l':
    case 'q':
      if (itemsize == 4) return DataType::Int32;
      if (itemsize == 8) return DataType::Int64;
      break;
  }
  *ok = false;
  return DataType::Uint8;
}

DataType torch_dtype(py::handle dtype, bool* ok) {
  static std::vector<std::pair<PyObject*, DataType>> seen;  // torch dtypes are singletons
  for (auto& [obj, t] : seen)
    if (obj == dtype.ptr()) return t;
  static const std::pair<const char*, DataType> names[] = {
      {"torch.int8", DataType::Int8},       {"torch.uint8", DataType::Uint8},     {"torch.int32", DataType::Int32},
      {"torch.int64", DataType::Int64},     {"torch.float16", DataType::Float16}, {"torch.bfloat16", DataType::BFloat16},
      {"torch.float32", DataType::Float32}, {"torch.float64", DataType::Float64}, {"torch.bool", DataType::Bool}};
  std::string name = py::str(dtype);
  for (auto& [n, t] : names)
    if (name == n) {
      seen.emplace_back(dtype.inc_ref().ptr(), t);
      return t;
    }
  *ok = false;
  return DataType::Uint8;
}

CallBuffer call_buffer(py::handle obj, bool writable, int rank, const char* op, const char* name) {
  CallBuffer b;
  bool ok = true;
  if (PyObject_CheckBuffer(obj.ptr())) {
    Py_buffer view;
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj.ptr(), &view, flags) != 0) {
      std::string why = py::str(py::error_already_set().value());
      raise(ErrorKind::Argument, "rank ", rank, ": ", op, ": ", name, ": ", why);
    }
    b.addr = uint64_t(view.buf);
    b.dtype = dtype_from_format(view.format ? view.format : "B", view.itemsize, &ok);
    if (!ok && view.itemsize == 2 && py::hasattr(obj, "dtype") &&
        std::string(py::str(obj.attr("dtype"))) == "bfloat16")  // numpy arrays of ml_dtypes' bfloat16
      b.dtype = DataType::BFloat16, ok = true;
    b.count = ok ? uint64_t(view.len) / dtype_size(b.dtype) : 0;
    std::string fmt = view.format ? view.format : "B";
    PyBuffer_Release(&view);
    if (!ok) raise(ErrorKind::Argument, "rank ", rank, ": ", op, ": ", name, ": element format '", fmt, "' is not supported");
    return b;
  }
  if (!py::hasattr(obj, "data_ptr"))
    raise(ErrorKind::Argument, "rank ", rank, ": ", op, ": ", name, ": ", std::string(py::str(py::type::of(obj))),
          " is neither a tensor nor a buffer");
  std::string device = py::str(obj.attr("device").attr("type"));
  if (device != "cpu")
    raise(ErrorKind::Argument, "rank ", rank, ": ", op, ": ", name, ": tensor on ", device, " is not host memory");
  if (!obj.attr("is_contiguous")().cast<bool>())
    raise(ErrorKind::Argument, "rank ", rank, ": ", op, ": ", name, ": tensor is not contiguous");
  b.dtype = torch_dtype(obj.attr("dtype"), &ok);
  if (!ok)
    raise(ErrorKind::Argument, "rank ", rank, ": ", op, ": ", name, ": tensor dtype ",
          std::string(py::str(obj.attr("dtype"))), " is not supported");
  b.addr = obj.attr("data_ptr")().cast<uint64_t>();
  b.count = obj.attr("numel")().cast<uint64_t>();
  return b;
}

// Input and output of a call: the output must be writable and of the input's type.
std::pair<CallBuffer, CallBuffer> call_pair(Communicator& c, py::handle send, py::handle recv, const char* op) {
  bool same = send.ptr() == recv.ptr();
  CallBuffer in = call_buffer(send, same, c.rank(), op, same ? "buffer" : "input");
  CallBuffer out = same ? in : call_buffer(recv, true, c.rank(), op, "output");
  if (in.dtype != out.dtype)
    raise(ErrorKind::Argument, "rank ", c.rank(), ": ", op, ": input is ", dtype_name(in.dtype), " but output is ",
          dtype_name(out.dtype));
  return {in, out};
}

ReduceOp reduce_op(const std::string& name, DataType t, int rank, const char* op) {
  static const std::pair<const char*, ReduceOp> ops[] = {
      {"sum", ReduceOp::Sum}, {"prod", ReduceOp::Prod}, {"min", ReduceOp::Min}, {"max", ReduceOp::Max}, {"avg", ReduceOp::Avg}};
  for (auto& [n, o] : ops)
    if (name == n) {
      if (o == ReduceOp::Avg && t == DataType::Bool) raise(ErrorKind::Argument, "rank ", rank, ": ", op, ": avg is not defined for bool");
      return o;
    }
  raise(ErrorKind::Argument, "rank ", rank, ": ", op, ": unsupported reduce op '", name, "' (sum, prod, min, max, avg)");
}

// Per-rank counts or displacements from Python: one entry per rank, none negative.
Counts counts_arg(const std::vector<int64_t>& v, const Communicator& c, const char* op, const char* name) {
  if (v.size() != size_t(c.world()))
    raise(ErrorKind::Argument, "rank ", c.rank(), ": ", op, ": ", name, " has ", v.size(), " entries for ",
          c.world(), " ranks");
  Counts out(v.size());
  for (size_t j = 0; j < v.size(); ++j) {
    if (v[j] < 0) raise(ErrorKind::Argument, "rank ", c.rank(), ": ", op, ": ", name, "[", j, "] is negative");
    out[j] = uint64_t(v[j]);
  }
  return out;
}

// Displacements given, or packed one after another.
Counts displs_arg(const std::optional<std::vector<int64_t>>& given, const Counts& counts, const Communicator& c,
                  const char* op, const char* name) {
  if (given) return counts_arg(*given, c, op, name);
  Counts out(counts.size(), 0);
  for (size_t j = 1; j < counts.size(); ++j) out[j] = out[j - 1] + counts[j - 1];
  return out;
}

// The largest displacement + count: how many elements a buffer must hold.
uint64_t extent_of(const Counts& counts, const Counts& displs) {
  uint64_t e = 0;
  for (size_t j = 0; j < counts.size(); ++j) e = std::max(e, displs[j] + counts[j]);
  return e;
}

void check_root(const Communicator& c, int root, const char* op) {
  if (root < 0 || root >= c.world())
    raise(ErrorKind::Argument, "rank ", c.rank(), ": ", op, ": root ", root, " is outside world of size ", c.world());
}

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
                       std::string transport, int channels) {
             return TuneRule{std::move(coll), world, max_bytes, std::move(algo), chunk, std::move(transport), channels};
           }),
           py::arg("collective"), py::arg("world"), py::arg("max_bytes"), py::arg("algo"), py::arg("chunk_bytes") = 0,
           py::arg("transport") = "", py::arg("channels") = 0);

  py::class_<CommConfig>(m, "CommConfig")
      .def(py::init<>())
      .def_readwrite("algo", &CommConfig::algo)
      .def_readwrite("chunk_bytes", &CommConfig::chunk_bytes)
      .def_readwrite("channels", &CommConfig::channels)
      .def_readwrite("slots", &CommConfig::slots)
      .def_readwrite("slot_bytes", &CommConfig::slot_bytes)
      .def_readwrite("rules", &CommConfig::rules);

  py::class_<Work, std::shared_ptr<Work>>(m, "Work")
      .def("wait", &Work::wait, py::arg("timeout_s"), gil_free())
      .def("test", &Work::test);

  py::class_<Communicator>(m, "Communicator")
      .def(py::init<std::shared_ptr<Endpoint>, const CommConfig&>())
      .def_property_readonly("rank", &Communicator::rank)
      .def_property_readonly("world", &Communicator::world)
      .def("local_keys", [](const Communicator& c) { return py::bytes(c.local_keys()); })
      .def("connect", &Communicator::connect)
      .def("choice",
           [](Communicator& c, const std::string& coll, uint64_t bytes) {
             auto ch = c.choice(coll.c_str(), bytes);
             return py::make_tuple(ch.algo, ch.chunk_bytes, ch.channels);
           })
      // The *_buffers entry points take the Python objects themselves: buffers,
      // dtypes, sizes and the op are checked in one native call (the hot path).
      .def("all_reduce_buffers",
           [](Communicator& c, py::handle send, py::handle recv, const std::string& op_name, bool async_op) {
             auto [in, out] = call_pair(c, send, recv, "all_reduce");
             if (in.count != out.count)
               raise(ErrorKind::Argument, "rank ", c.rank(), ": all_reduce: output has ", out.count,
                     " elements, input ", in.count);
             ReduceOp op = reduce_op(op_name, in.dtype, c.rank(), "all_reduce");
             return dispatch(c, async_op, [&c, in = in, out = out, op] { c.all_reduce(in.addr, out.addr, in.count, in.dtype, op); });
           })
      .def("broadcast_buffers",
           [](Communicator& c, py::handle buf, int root, bool async_op) {
             CallBuffer b = call_buffer(buf, c.rank() != root, c.rank(), "broadcast", "buffer");
             return dispatch(c, async_op, [&c, b, root] { c.broadcast(b.addr, b.count, b.dtype, root); });
           })
      .def("all_gather_buffers",
           [](Communicator& c, py::handle send, py::handle recv, bool async_op) {
             auto [in, out] = call_pair(c, send, recv, "all_gather");
             uint64_t W = uint64_t(c.world());
             if (out.count != in.count * W)
               raise(ErrorKind::Argument, "rank ", c.rank(), ": all_gather: output has ", out.count,
                     " elements, expected ", W, " x ", in.count);
             Counts counts(W, in.count), displs(W);
             for (uint64_t j = 0; j < W; ++j) displs[j] = j * in.count;
             return dispatch(c, async_op, [&c, in = in, out = out, counts, displs] {
               c.all_gather_v(in.addr, out.addr, counts, displs, in.dtype);
             });
           })
      .def("reduce_scatter_buffers",
           [](Communicator& c, py::handle send, py::handle recv, const std::string& op_name, bool async_op) {
             auto [in, out] = call_pair(c, send, recv, "reduce_scatter");
             uint64_t W = uint64_t(c.world());
             if (in.count != out.count * W)
               raise(ErrorKind::Argument, "rank ", c.rank(), ": reduce_scatter: input has ", in.count,
                     " elements, expected ", W, " x ", out.count);
             ReduceOp op = reduce_op(op_name, in.dtype, c.rank(), "reduce_scatter");
             return dispatch(c, async_op, [&c, in = in, out = out, op, W] {
               c.reduce_scatter_v(in.addr, out.addr, Counts(W, out.count), in.dtype, op);
             });
           })
      .def("all_to_all_buffers",
           [](Communicator& c, py::handle send, py::handle recv, bool async_op) {
             auto [in, out] = call_pair(c, send, recv, "all_to_all");
             uint64_t W = uint64_t(c.world());
             if (in.count != out.count || in.count % W)
               raise(ErrorKind::Argument, "rank ", c.rank(), ": all_to_all: input (", in.count, ") and output (",
                     out.count, ") must have the same size, divisible by ", W);
             Counts counts(W, in.count / W), displs(W);
             for (uint64_t j = 0; j < W; ++j) displs[j] = j * (in.count / W);
             return dispatch(c, async_op, [&c, in = in, out = out, counts, displs] {
               c.all_to_all_v(in.addr, counts, displs, out.addr, counts, displs, in.dtype);
             });
           })
      // Raw addresses, no argument checks: for perf/allreduce_latency_breakdown.py only.
      .def("all_reduce",
           [](Communicator& c, uint64_t s, uint64_t r, uint64_t n, DataType t, ReduceOp op, bool async_op) {
             return dispatch(c, async_op, [&c, s, r, n, t, op] { c.all_reduce(s, r, n, t, op); });
           })
      .def("reduce_buffers",
           [](Communicator& c, py::handle send, py::handle recv, const std::string& op_name, int root, bool async_op) {
             check_root(c, root, "reduce");
             auto [in, out] = c.rank() == root ? call_pair(c, send, recv, "reduce")
                                               : std::pair{call_buffer(send, false, c.rank(), "reduce", "input"),
                                                           CallBuffer{}};
             if (c.rank() == root && out.count != in.count)
               raise(ErrorKind::Argument, "rank ", c.rank(), ": reduce: output has ", out.count, " elements, input ",
                     in.count);
             ReduceOp op = reduce_op(op_name, in.dtype, c.rank(), "reduce");
             uint64_t dst = c.rank() == root ? out.addr : in.addr;
             return dispatch(c, async_op, [&c, in = in, dst, op, root] { c.reduce(in.addr, dst, in.count, in.dtype, op, root); });
           })
      .def("all_gather_v_buffers",
           [](Communicator& c, py::handle send, py::handle recv, const std::vector<int64_t>& counts_in,
              const std::optional<std::vector<int64_t>>& displs_in, bool async_op) {
             Counts counts = counts_arg(counts_in, c, "all_gather_v", "counts");
             Counts displs = displs_arg(displs_in, counts, c, "all_gather_v", "displs");
             auto [in, out] = call_pair(c, send, recv, "all_gather_v");
             if (in.count != counts[size_t(c.rank())])
               raise(ErrorKind::Argument, "rank ", c.rank(), ": all_gather_v: input has ", in.count,
                     " elements but counts[", c.rank(), "] = ", counts[size_t(c.rank())]);
             if (extent_of(counts, displs) > out.count)
               raise(ErrorKind::Argument, "rank ", c.rank(), ": all_gather_v: output of ", out.count,
                     " elements is too small for counts and displacements reaching ", extent_of(counts, displs));
             return dispatch(c, async_op, [&c, in = in, out = out, counts, displs] {
               c.all_gather_v(in.addr, out.addr, counts, displs, in.dtype);
             });
           })
      .def("reduce_scatter_v_buffers",
           [](Communicator& c, py::handle send, py::handle recv, const std::vector<int64_t>& counts_in,
              const std::string& op_name, bool async_op) {
             Counts counts = counts_arg(counts_in, c, "reduce_scatter_v", "counts");
             auto [in, out] = call_pair(c, send, recv, "reduce_scatter_v");
             uint64_t total = 0;
             for (auto n : counts) total += n;
             if (in.count != total || out.count < counts[size_t(c.rank())])
               raise(ErrorKind::Argument, "rank ", c.rank(), ": reduce_scatter_v: input has ", in.count,
                     " elements (counts sum to ", total, "), output ", out.count, " (needs ", counts[size_t(c.rank())],
                     ")");
             ReduceOp op = reduce_op(op_name, in.dtype, c.rank(), "reduce_scatter_v");
             return dispatch(c, async_op, [&c, in = in, out = out, counts, op] {
               c.reduce_scatter_v(in.addr, out.addr, counts, in.dtype, op);
             });
           })
      .def("all_to_all_v_buffers",
           [](Communicator& c, py::handle send, const std::vector<int64_t>& sc_in, py::handle recv,
              const std::vector<int64_t>& rc_in, const std::optional<std::vector<int64_t>>& sd_in,
              const std::optional<std::vector<int64_t>>& rd_in, bool async_op) {
             Counts sc = counts_arg(sc_in, c, "all_to_all_v", "send_counts");
             Counts rc = counts_arg(rc_in, c, "all_to_all_v", "recv_counts");
             Counts sd = displs_arg(sd_in, sc, c, "all_to_all_v", "send_displs");
             Counts rd = displs_arg(rd_in, rc, c, "all_to_all_v", "recv_displs");
             auto [in, out] = call_pair(c, send, recv, "all_to_all_v");
             if (extent_of(sc, sd) > in.count)
               raise(ErrorKind::Argument, "rank ", c.rank(), ": all_to_all_v: send counts reach element ",
                     extent_of(sc, sd), " of an input of ", in.count);
             if (extent_of(rc, rd) > out.count)
               raise(ErrorKind::Argument, "rank ", c.rank(), ": all_to_all_v: recv counts reach element ",
                     extent_of(rc, rd), " of an output of ", out.count);
             return dispatch(c, async_op, [&c, in = in, out = out, sc, sd, rc, rd] {
               c.all_to_all_v(in.addr, sc, sd, out.addr, rc, rd, in.dtype);
             });
           })
      .def("gather_buffers",
           [](Communicator& c, py::handle send, py::object recv, int root, bool async_op) {
             check_root(c, root, "gather");
             CallBuffer in = call_buffer(send, false, c.rank(), "gather", "input"), out = in;
             if (c.rank() == root) {
               if (recv.is_none()) raise(ErrorKind::Argument, "rank ", c.rank(), ": gather: the root needs an output");
               std::tie(in, out) = call_pair(c, send, recv, "gather");
               if (out.count != in.count * uint64_t(c.world()))
                 raise(ErrorKind::Argument, "rank ", c.rank(), ": gather: output must be ", c.world(), " x ", in.count,
                       " elements, got ", out.count);
             }
             return dispatch(c, async_op, [&c, in, out, root] { c.gather(in.addr, out.addr, in.count, in.dtype, root); });
           })
      .def("scatter_buffers",
           [](Communicator& c, py::object send, py::handle recv, int root, bool async_op) {
             check_root(c, root, "scatter");
             CallBuffer out = call_buffer(recv, true, c.rank(), "scatter", "output"), in = out;
             if (c.rank() == root) {
               if (send.is_none()) raise(ErrorKind::Argument, "rank ", c.rank(), ": scatter: the root needs an input");
               std::tie(in, out) = call_pair(c, send, recv, "scatter");
               if (in.count != out.count * uint64_t(c.world()))
                 raise(ErrorKind::Argument, "rank ", c.rank(), ": scatter: input must be ", c.world(), " x ", out.count,
                       " elements, got ", in.count);
             }
             return dispatch(c, async_op, [&c, in, out, root] { c.scatter(in.addr, out.addr, out.count, out.dtype, root); });
           })
      .def("barrier", [](Communicator& c, bool async_op) { return dispatch(c, async_op, [&c] { c.barrier(); }); });
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
    if (c.net.present) {  // net channel: the flow and each of its paths
      const NetCounters& n = c.net;
      py::dict f;
      f["packets_sent"] = n.packets_sent;
      f["payload_bytes_sent"] = n.payload_bytes_sent;
      f["packets_received"] = n.packets_received;
      f["payload_bytes_received"] = n.payload_bytes_received;
      f["retransmits"] = n.retransmits;
      f["timeouts"] = n.timeouts;
      f["tail_probes"] = n.tail_probes;
      f["acks_sent"] = n.acks_sent;
      f["acks_received"] = n.acks_received;
      f["srtt_us"] = n.srtt_us;
      f["rto_us"] = n.rto_us;
      f["drops"] = n.drops;
      py::list paths;
      for (const auto& p : n.paths) {
        py::dict pd;
        pd["packets_sent"] = p.packets_sent;
        pd["bytes_sent"] = p.bytes_sent;
        pd["retransmits"] = p.retransmits;
        pd["losses"] = p.losses;
        pd["timeouts"] = p.timeouts;
        pd["srtt_us"] = p.srtt_us;
        pd["cwnd_bytes"] = p.cwnd_bytes;
        pd["pacing_rate_bps"] = p.pacing_rate_bps;
        pd["inflight_bytes"] = p.inflight_bytes;
        paths.append(pd);
      }
      f["paths"] = paths;
      d["net"] = f;
    }
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
  bind_settings(m);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      translate(e);
    }
  });

  // (address, bytes, item size, read-only, format) of a C-contiguous buffer, in one call.
  m.def("buffer_info", [](py::handle obj, bool writable) {
    Py_buffer view;
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj.ptr(), &view, flags) != 0) throw py::error_already_set();
    py::tuple out = py::make_tuple(uint64_t(view.buf), uint64_t(view.len), view.itemsize, bool(view.readonly),
                                   view.format ? view.format : "B");
    PyBuffer_Release(&view);
    return out;
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
      .def_readwrite("swift_target_us", &NetConfig::swift_target_us)
      .def_readwrite("max_retries", &NetConfig::max_retries);

  py::class_<EndpointConfig>(m, "EndpointConfig")
      .def(py::init<>())
      .def_readwrite("rank", &EndpointConfig::rank)
      .def_readwrite("world", &EndpointConfig::world)
      .def_readwrite("secret", &EndpointConfig::secret)
      .def_readwrite("transport", &EndpointConfig::transport)
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

  bind_collectives(m);

  m.def("pingpong_one_way_us", &pingpong_one_way_us, py::arg("endpoint"), py::arg("peer"), py::arg("initiator"),
        py::arg("lkey"), py::arg("rkey"), py::arg("size"), py::arg("iters"), py::arg("warmup") = 100,
        gil_free());
  // For tests: the net channel's return-path queueing estimate over a trace of
  // (our arrival clock, the acker's departure clock) pairs.
  m.def("_reverse_delay_trace", [](const std::vector<std::pair<uint64_t, uint64_t>>& trace) {
    net::ReverseDelay r;
    std::vector<uint64_t> out;
    out.reserve(trace.size());
    for (const auto& [now, sent] : trace) out.push_back(r.sample(now, sent));
    return out;
  });
}
