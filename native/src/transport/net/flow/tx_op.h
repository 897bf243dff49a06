// An operation this side sends (a write, a message, a read request, or protocol
// traffic: read responses, error packets, liveness probes) and its progress.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "transport/completion.h"
#include "transport/net/packet.h"

namespace uccl::net {

struct TxOp {
  OpKind kind = kOpNop;
  Opcode opcode = Opcode::Write;
  bool internal = false;  // protocol traffic (read responses, errors, probes): no completion
  uint64_t wr_id = 0;
  const char* src = nullptr;
  uint64_t len = 0;  // payload bytes
  uint64_t a = 0, b = 0, c = 0;  // per-kind operands (see OpKind)
  uint32_t imm = 0;
  uint8_t flags = 0;
  // read requests: where the response lands
  char* read_dst = nullptr;
  uint64_t read_got = 0;
  bool read_done = false;
  // sender progress
  uint64_t msg_id = 0;
  uint64_t next_off = 0;
  bool all_sent = false;
  uint32_t unacked = 0;
  bool failed = false;
  ErrorKind error_kind = ErrorKind::Generic;
  std::string error;
};

// An application's operations, as a channel submits them to its flow.
std::unique_ptr<TxOp> write_op(uint64_t wr_id, const void* src, uint64_t len, uint64_t rkey, uint64_t roff,
                               bool with_imm = false, uint32_t imm = 0);
std::unique_ptr<TxOp> read_op(uint64_t wr_id, void* dst, uint64_t len, uint64_t rkey, uint64_t roff);
std::unique_ptr<TxOp> send_op(uint64_t wr_id, const void* data, uint64_t len, uint64_t tag);

// "write to rank 3", "send(tag=7) to rank 3", ...: how error messages name an operation.
std::string op_name(const TxOp& op, int peer_rank);

// The failed completion of `op` (not internal) when the flow to its peer has failed.
Completion peer_failure(const TxOp& op, ErrorKind kind, int my_rank, int peer_rank, const std::string& cause);

}  // namespace uccl::net
