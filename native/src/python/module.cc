// uccl._native: the native core as Python sees it. Each subject binds itself (bind.h);
// here they are put together, and native errors become uccl.errors classes.
#include <pybind11/pybind11.h>

#include <string>

#include "common/errors.h"
#include "python/bind.h"

namespace py = pybind11;

namespace {

void translate(const uccl::Error& e) {
  static const char* names[] = {"UcclError", "UcclTimeoutError", "PeerFailureError",
                                "AccessError", "InvalidArgumentError", "MismatchError"};
  py::object cls = py::module_::import("uccl.errors").attr(names[int(e.kind())]);
  // Messages may quote bytes from a peer: never let a decoding error hide the real one.
  std::string msg = e.what();
  py::object text = py::reinterpret_steal<py::object>(PyUnicode_DecodeUTF8(msg.data(), Py_ssize_t(msg.size()), "replace"));
  PyErr_SetObject(cls.ptr(), text.ptr());
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "uccl native core";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const uccl::Error& e) {
      translate(e);
    }
  });
  uccl::python::bind_settings(m);
  uccl::python::bind_buffers(m);
  uccl::python::bind_endpoint(m);
  uccl::python::bind_collectives(m);
  uccl::python::bind_tools(m);
  uccl::python::bind_moe(m);
}
