// The refusal protocol. The receiving side checks each of the peer's writes and
// reads against its own region table (the key is registered, the region grants
// the access, the bytes lie inside it) and answers one it refuses with an error
// operation (kOpError: a = the refused operation's msg id, b = ErrorCode,
// c = the region's length); the requester fails that operation with a message
// naming the cause.
//
// A write completes when all its packets are acknowledged, and an ack may
// overtake the error packet that refuses the write. So acks carry how many
// error packets the acker has sent (refused writes and reads alike), and a
// writer holds its finished writes while the peer reports more than have
// arrived (WriteHold). Both sides must count the same thing: were refused reads
// left out of one count, a refused write could complete as a success.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "transport/net/flow/tx_op.h"
#include "transport/region_table.h"

namespace uccl::net {

// 0 if `len` bytes at `off` of region `r` may be accessed with `access`
// (kRemoteWrite or kRemoteRead), else the ErrorCode to refuse with.
uint64_t check_access(const std::optional<Region>& r, uint32_t access, uint64_t off, uint64_t len);

// The error operation that refuses the peer's operation `refused_msg_id`.
std::unique_ptr<TxOp> refusal(uint64_t refused_msg_id, uint64_t code, uint64_t region_len);

// What the requester's failed operation reports, for an error packet's code.
std::string refusal_message(const TxOp& refused, uint64_t code, uint64_t region_len, int my_rank, int peer_rank);

// The writer's side: whether a refusal the peer has reported may still be on its way.
class WriteHold {
 public:
  void on_peer_refusals(uint64_t count) {  // from every ack
    if (count > peer_refusals_) peer_refusals_ = count;
  }
  void on_error_packet() { ++errors_received_; }
  // Both counts cover every error packet, refused reads included.
  bool refusal_pending() const { return peer_refusals_ > errors_received_; }

  bool held = false;  // a finished write is waiting for refusal_pending() to clear

 private:
  uint64_t peer_refusals_ = 0, errors_received_ = 0;
};

}  // namespace uccl::net
