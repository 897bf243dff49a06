#include "python/hold.h"

#include <atomic>
#include <mutex>
#include <utility>
#include <vector>

namespace uccl::python {

namespace {

struct Held {
  PyObject* obj = nullptr;
  Py_buffer view{};
  bool has_view = false;
};

void release_now(Held* h) {
  if (h->has_view) PyBuffer_Release(&h->view);
  Py_XDECREF(h->obj);
  delete h;
}

bool finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing();
#else
  return _Py_IsFinalizing();
#endif
}

// Holders dropped without the GIL, until the main thread releases them. Never
// destroyed: at exit what is left is not touched without an interpreter.
struct Dropped {
  std::mutex mu;
  std::vector<Held*> held;
  std::atomic<bool> release_scheduled{false};
  std::atomic<bool> any{false};
};
Dropped& dropped() {
  static Dropped* d = new Dropped;
  return *d;
}

int release_pending_call(void*) {
  release_dropped_holds();
  return 0;
}

void drop(Held* h) {
  if (!Py_IsInitialized() || finalizing()) return;  // the objects go with the interpreter
  if (PyGILState_Check()) {
    release_now(h);
    return;
  }
  // Taking the GIL here could deadlock (the dropping thread may hold a lock that a
  // thread holding the GIL waits for): hand the release to the main thread instead.
  Dropped& d = dropped();
  {
    std::lock_guard<std::mutex> lk(d.mu);
    d.held.push_back(h);
  }
  d.any = true;
  if (!d.release_scheduled.exchange(true) && Py_AddPendingCall(release_pending_call, nullptr) != 0)
    d.release_scheduled = false;  // the queue is full: the next hold() or drop retries
}

}  // namespace

void release_dropped_holds() {
  Dropped& d = dropped();
  d.release_scheduled = false;
  if (!d.any.exchange(false)) return;
  std::vector<Held*> batch;
  {
    std::lock_guard<std::mutex> lk(d.mu);
    batch.swap(d.held);
  }
  for (Held* h : batch) release_now(h);
}

namespace {
std::shared_ptr<void> owning(Held* h) {
  return std::shared_ptr<void>(h, [](void* p) { drop(static_cast<Held*>(p)); });
}
}  // namespace

std::shared_ptr<void> hold(pybind11::handle obj) {
  release_dropped_holds();
  auto* h = new Held;
  h->obj = obj.inc_ref().ptr();
  return owning(h);
}

std::shared_ptr<void> hold_export(pybind11::handle obj, int flags, const Py_buffer** view) {
  release_dropped_holds();
  auto* h = new Held;
  if (PyObject_GetBuffer(obj.ptr(), &h->view, flags) != 0) {
    delete h;
    return nullptr;
  }
  h->has_view = true;
  h->obj = obj.inc_ref().ptr();
  *view = &h->view;
  return owning(h);
}

}  // namespace uccl::python
