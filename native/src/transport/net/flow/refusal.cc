#include "transport/net/flow/refusal.h"

#include "common/errors.h"

namespace uccl::net {

uint64_t check_access(const std::optional<Region>& r, uint32_t access, uint64_t off, uint64_t len) {
  if (!r) return kErrNoKey;
  if (!(r->flags & access)) return access == kRemoteWrite ? kErrNoWriteAccess : kErrNoReadAccess;
  if (off > r->len || len > r->len - off) return kErrBounds;
  return 0;
}

std::unique_ptr<TxOp> refusal(uint64_t refused_msg_id, uint64_t code, uint64_t region_len) {
  auto err = std::make_unique<TxOp>();
  err->kind = kOpError;
  err->internal = true;
  err->a = refused_msg_id;
  err->b = code;
  err->c = region_len;
  return err;
}

std::string refusal_message(const TxOp& refused, uint64_t code, uint64_t region_len, int my_rank, int peer_rank) {
  const bool read = refused.kind == kOpReadReq;
  std::string cause;
  switch (code) {
    case kErrNoKey:
      cause = format_msg("remote key 0x", std::hex, refused.a, std::dec,
                         " is not registered there (never registered, or deregistered)");
      break;
    case kErrNoWriteAccess:
      cause = format_msg("region 0x", std::hex, refused.a, std::dec, " does not grant remote write access");
      break;
    case kErrNoReadAccess:
      cause = format_msg("region 0x", std::hex, refused.a, std::dec, " does not grant remote read access");
      break;
    case kErrTooLarge:
      cause = format_msg("message of ", refused.len, " bytes exceeds the net channel's limit of ", region_len,
                         " bytes (or the receiver could not allocate it)");
      break;
    default:
      cause = format_msg(read ? refused.c : refused.len, " bytes at offset ", refused.b,
                         " fall outside the remote region of ", region_len, " bytes");
  }
  return format_msg("rank ", my_rank, ": ", read ? "read from" : refused.kind == kOpSend ? "send to" : "write to", " rank ", peer_rank, ": ", cause);
}

}  // namespace uccl::net
