// Releases the GIL around a blocking native call.
#pragma once
#include <pybind11/pybind11.h>

#include <chrono>
#include <thread>

namespace uccl::python {

// A daemon thread still blocked here when the interpreter shuts down must not take the
// GIL back: CPython would end it with pthread_exit, whose unwinding through this
// destructor aborts the whole process ("terminate called without an active exception").
// It parks instead, as CPython 3.14 parks daemon threads itself; the process is exiting anyway.
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

// For .def(...): the whole bound call runs without the GIL.
using gil_free = pybind11::call_guard<GilRelease>;

// A collective: a blocking call releases the GIL; a queued one (async_op) only
// enqueues, holding it.
template <typename Call>
auto issue_collective(bool async_op, Call&& call) {
  if (async_op) return call();
  GilRelease nogil;
  return call();
}

}  // namespace uccl::python
