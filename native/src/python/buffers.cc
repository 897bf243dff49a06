#include "python/buffers.h"

#include <string>
#include <utility>
#include <vector>

#include "common/errors.h"
#include "python/bind.h"
#include "python/hold.h"

namespace py = pybind11;

namespace uccl::python {

namespace {

template <typename... Parts>
[[noreturn]] void refuse(const ArgName& arg, const Parts&... parts) {
  raise(ErrorKind::Argument, "rank ", arg.rank, ": ", arg.op, ": ", arg.name, ": ", parts...);
}

// A buffer-protocol format ("f", "<i", ...) as a collective's element type.
bool format_dtype(const char* fmt, Py_ssize_t itemsize, DataType* t) {
  while (*fmt == '@' || *fmt == '=' || *fmt == '<') ++fmt;
  switch (fmt[0] == 0 || fmt[1] != 0 ? 0 : fmt[0]) {
    case 'b': *t = DataType::Int8; return true;
    case 'B': *t = DataType::Uint8; return true;
    case '?': *t = DataType::Bool; return true;
    case 'e': *t = DataType::Float16; return true;
    case 'f': *t = DataType::Float32; return true;
    case 'd': *t = DataType::Float64; return true;
    case 'i':
    case 'l':
    case 'q':
      if (itemsize == 4) return *t = DataType::Int32, true;
      if (itemsize == 8) return *t = DataType::Int64, true;
      break;
  }
  return false;
}

// numpy arrays of ml_dtypes' bfloat16 export a format of their own.
bool is_numpy_bfloat16(py::handle obj, Py_ssize_t itemsize) {
  return itemsize == 2 && py::hasattr(obj, "dtype") && std::string(py::str(obj.attr("dtype"))) == "bfloat16";
}

bool torch_dtype(py::handle dtype, DataType* t) {
  static std::vector<std::pair<PyObject*, DataType>> seen;  // torch dtypes are singletons
  for (auto& [obj, type] : seen)
    if (obj == dtype.ptr()) return *t = type, true;
  static const std::pair<const char*, DataType> names[] = {
      {"torch.int8", DataType::Int8},       {"torch.uint8", DataType::Uint8},     {"torch.int32", DataType::Int32},
      {"torch.int64", DataType::Int64},     {"torch.float16", DataType::Float16}, {"torch.bfloat16", DataType::BFloat16},
      {"torch.float32", DataType::Float32}, {"torch.float64", DataType::Float64}, {"torch.bool", DataType::Bool}};
  std::string name = py::str(dtype);
  for (auto& [n, type] : names)
    if (name == n) {
      seen.emplace_back(dtype.inc_ref().ptr(), type);
      return *t = type, true;
    }
  return false;
}

struct Decoded {
  HostBytes bytes;
  uint64_t count = 0;                // elements of `dtype` (typed decoding only)
  DataType dtype = DataType::Uint8;
  std::shared_ptr<void> owner;       // the object, and its buffer export if it has one
};

// Buffer-protocol objects through PyObject_GetBuffer, torch CPU tensors through
// data_ptr(). `typed`: the element type must be one the collectives know.
Decoded decode(py::handle obj, bool writable, bool typed, const ArgName& arg) {
  Decoded d;
  if (PyObject_CheckBuffer(obj.ptr())) {
    // The export is kept with the owner: the memory stays where it is while it is used.
    const Py_buffer* view = nullptr;
    d.owner = hold_export(obj, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT, &view);
    if (!d.owner) {
      std::string why = py::str(py::error_already_set().value());
      refuse(arg, why);
    }
    d.bytes = HostBytes{uint64_t(view->buf), uint64_t(view->len), uint64_t(view->itemsize), bool(view->readonly)};
    const char* fmt = view->format ? view->format : "B";
    bool known = !typed || format_dtype(fmt, view->itemsize, &d.dtype);
    if (!known && is_numpy_bfloat16(obj, view->itemsize)) d.dtype = DataType::BFloat16, known = true;
    if (!known) refuse(arg, "element format '", std::string(fmt), "' is not supported");
    if (typed) d.count = d.bytes.nbytes / dtype_size(d.dtype);
  } else {
    if (!py::hasattr(obj, "data_ptr"))
      refuse(arg, std::string(py::str(py::type::of(obj))), " is neither a tensor nor a buffer");
    std::string device = py::str(obj.attr("device").attr("type"));
    if (device != "cpu") refuse(arg, "tensor on ", device, " is not host memory");
    if (!obj.attr("is_contiguous")().cast<bool>()) refuse(arg, "tensor is not contiguous");
    if (typed) {
      if (!torch_dtype(obj.attr("dtype"), &d.dtype))
        refuse(arg, "tensor dtype ", std::string(py::str(obj.attr("dtype"))), " is not supported");
      d.bytes.itemsize = dtype_size(d.dtype);
    } else {
      d.bytes.itemsize = obj.attr("element_size")().cast<uint64_t>();
    }
    d.bytes.addr = obj.attr("data_ptr")().cast<uint64_t>();
    d.count = obj.attr("numel")().cast<uint64_t>();
    d.bytes.nbytes = d.count * d.bytes.itemsize;
    d.owner = hold(obj);
  }
  if (writable && d.bytes.readonly) refuse(arg, "buffer is read-only");
  return d;
}

}  // namespace

HostBytes host_bytes(py::handle obj, bool writable, const ArgName& arg, std::shared_ptr<void>* owner) {
  Decoded d = decode(obj, writable, false, arg);
  if (owner) *owner = std::move(d.owner);
  return d.bytes;
}

Buffer typed_buffer(py::handle obj, bool writable, const ArgName& arg) {
  Decoded d = decode(obj, writable, true, arg);
  return Buffer{d.bytes.addr, d.count, d.dtype, std::move(d.owner)};
}

void bind_buffers(py::module_& m) {
  m.def(
      "describe_buffer",
      [](py::handle obj, bool writable, int rank, const std::string& op, const std::string& name) {
        HostBytes b = host_bytes(obj, writable, ArgName{rank, op.c_str(), name.c_str()});
        return py::make_tuple(b.addr, b.nbytes, b.itemsize, b.readonly);
      },
      "(address, bytes, item size, read-only) of a contiguous host buffer; errors name the rank, op and argument",
      py::arg("obj"), py::arg("writable"), py::arg("rank"), py::arg("op"), py::arg("name") = "buffer");
}

}  // namespace uccl::python
