// What the transport reports back: completions of local operations and
// events caused by peers (a write-with-immediate that landed here).
#pragma once
#include <cstdint>
#include <string>

#include "common/errors.h"

namespace uccl {

enum class Opcode : uint32_t { Write = 1, Read = 2, Send = 3, Recv = 4, RemoteWrite = 5 };

constexpr int kAnySource = -1;
constexpr int kNoPeer = -2;  // a wait that watches no particular peer

// Names an operation in error messages; the text is built only when needed.
struct OpDesc {
  Opcode op = Opcode::Write;
  int peer = kNoPeer;
  uint64_t tag = 0;
  const char* label = nullptr;  // overrides the opcode's name (e.g. a collective)
  bool any_peer = false;        // any peer's death fails the wait (a collective needs them all), but one that closed its endpoint

  std::string str() const {
    std::string who = peer == kAnySource ? std::string("any rank") : "rank " + std::to_string(peer);
    if (label) return peer == kNoPeer ? std::string(label) : std::string(label) + " with " + who;
    switch (op) {
      case Opcode::Write: return "write to " + who;
      case Opcode::Read: return "read from " + who;
      case Opcode::Send: return "send(tag=" + std::to_string(tag) + ") to " + who;
      case Opcode::Recv: return "recv(tag=" + std::to_string(tag) + ") from " + who;
      case Opcode::RemoteWrite: return "wait for a remote write from " + who;
    }
    return "operation";
  }
};

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
