#include "transport/net/flow/tx_op.h"

#include "common/errors.h"

namespace uccl::net {

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
