// The one decoder of Python buffers: buffer-protocol objects (numpy arrays included,
// with ml_dtypes' bfloat16) and torch CPU tensors. The collectives and the transport
// both use it; its errors name the call and the argument ("rank R: OP: NAME: cause").
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>

#include "coll/core/validate.h"

namespace uccl::python {

// Which argument of which call, for errors.
struct ArgName {
  int rank;
  const char* op;
  const char* name;
};

// The contiguous host memory behind a Python object.
struct HostBytes {
  uint64_t addr = 0;
  uint64_t nbytes = 0;
  uint64_t itemsize = 1;
  bool readonly = false;
};

// Any element type (registration, messages). `writable`: refuse read-only memory.
// `owner`, when given, receives what keeps the memory alive and in place (hold.h).
HostBytes host_bytes(pybind11::handle obj, bool writable, const ArgName& arg,
                     std::shared_ptr<void>* owner = nullptr);
// Elements of a type the collectives know (dtype.h), for a collective's argument; the
// Buffer's owner keeps the object and its export until the last copy goes.
Buffer typed_buffer(pybind11::handle obj, bool writable, const ArgName& arg);

}  // namespace uccl::python
