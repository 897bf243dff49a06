#include "transport/net/flow/tx_op.h"

#include "common/errors.h"

namespace uccl::net {

std::unique_ptr<TxOp> write_op(uint64_t wr_id, const void* src, uint64_t len, uint64_t rkey, uint64_t roff,
                               bool with_imm, uint32_t imm) {
  auto op = std::make_unique<TxOp>();
  op->kind = kOpWrite;
  op->opcode = Opcode::Write;
  op->wr_id = wr_id;
  op->src = static_cast<const char*>(src);
  op->len = len;
  op->a = rkey;
  op->b = roff;
  op->imm = imm;
  op->flags = with_imm ? kFlagImm : 0;
  return op;
}

std::unique_ptr<TxOp> read_op(uint64_t wr_id, void* dst, uint64_t len, uint64_t rkey, uint64_t roff) {
  auto op = std::make_unique<TxOp>();
  op->kind = kOpReadReq;
  op->opcode = Opcode::Read;
  op->wr_id = wr_id;
  op->read_dst = static_cast<char*>(dst);
  op->a = rkey;
  op->b = roff;
  op->c = len;
  return op;
}

std::unique_ptr<TxOp> send_op(uint64_t wr_id, const void* data, uint64_t len, uint64_t tag) {
  auto op = std::make_unique<TxOp>();
  op->kind = kOpSend;
  op->opcode = Opcode::Send;
  op->wr_id = wr_id;
  op->src = static_cast<const char*>(data);
  op->len = len;
  op->a = tag;
  return op;
}

std::string op_name(const TxOp& op, int peer_rank) {
  switch (op.kind) {
    case kOpWrite: return format_msg("write to rank ", peer_rank);
    case kOpSend: return format_msg("send(tag=", op.a, ") to rank ", peer_rank);
    case kOpReadReq: return format_msg("read from rank ", peer_rank);
    default: return format_msg("probe of rank ", peer_rank);
  }
}

Completion peer_failure(const TxOp& op, ErrorKind kind, int my_rank, int peer_rank, const std::string& cause) {
  Completion c;
  c.wr_id = op.wr_id;
  c.opcode = op.opcode;
  c.peer = peer_rank;
  c.ok = false;
  c.error_kind = kind;
  c.error = format_msg("rank ", my_rank, ": ", op_name(op, peer_rank), ": ", cause);
  return c;
}

}  // namespace uccl::net
