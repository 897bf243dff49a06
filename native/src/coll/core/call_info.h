// Names a collective call in errors ("all_reduce(count=10, float32, sum)"),
// without building any string unless an error needs one.
#pragma once
#include <cstdint>
#include <string>

#include "coll/core/dtype.h"
#include "common/errors.h"

namespace uccl {

struct CallInfo {
  const char* name = "collective";
  uint64_t count = 0;
  DataType dtype = DataType::Uint8;
  ReduceOp op = ReduceOp::Sum;
  bool has_op = false;
  int root = -1;  // -1: not a rooted collective

  std::string str() const {
    if (!has_op && root < 0 && count == 0 && std::string(name) == "barrier") return "barrier()";
    return format_msg(name, "(count=", count, ", ", dtype_name(dtype), has_op ? ", " : "", has_op ? op_name(op) : "",
                      root >= 0 ? ", root=" : "", root >= 0 ? std::to_string(root) : "", ")");
  }
};

}  // namespace uccl
