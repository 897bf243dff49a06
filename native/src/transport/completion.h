// What the transport reports back: completions of local operations and
// events caused by peers (a write-with-immediate that landed here).
#pragma once
#include <cstdint>
#include <string>

#include "common/errors.h"

namespace uccl {

enum class Opcode : uint32_t { Write = 1, Read = 2, Send = 3, Recv = 4, RemoteWrite = 5 };

struct Completion {
  uint64_t wr_id = 0;
  Opcode opcode = Opcode::Write;
  int32_t peer = -1;
  uint32_t imm = 0;
  uint64_t tag = 0;
  uint64_t len = 0;     // bytes moved (for Recv: the message's length)
  uint64_t offset = 0;  // RemoteWrite: where in the region it landed
  uint64_t key = 0;     // RemoteWrite: which region
  bool ok = true;
  ErrorKind error_kind = ErrorKind::Generic;  // set when !ok
  std::string error;                          // set when !ok, names rank, operation and cause
};

}  // namespace uccl
