// Keeps Python objects alive while native code uses their memory after the call that
// passed them has returned (a queued collective, a write still in flight). The holder
// may be dropped on any thread, with or without the GIL, and never blocks.
#pragma once
#include <pybind11/pybind11.h>

#include <memory>

namespace uccl::python {

// Holds `obj` (call with the GIL).
std::shared_ptr<void> hold(pybind11::handle obj);
// Holds `obj` and a buffer export of it (PyObject_GetBuffer with `flags`), which stays
// in place (a bytearray cannot be resized, say) until the holder goes; *view points at
// it. On failure returns nullptr with the Python error set.
std::shared_ptr<void> hold_export(pybind11::handle obj, int flags, const Py_buffer** view);

// Releases the holders that were dropped without the GIL (call with the GIL). Runs by
// itself on the main thread soon after such a drop; calling it earlier is harmless.
void release_dropped_holds();

}  // namespace uccl::python
