// Block exchange: each rank sends one block to some peers and receives one block
// from some peers. all_to_all(v) (everyone to everyone), gather (everyone to the
// root) and scatter (the root to everyone) are its shapes.
//
// Blocks up to the eager size travel through a link slot (one message); larger
// ones are written straight into the receiver's output through the window it
// granted: a round trip, but no second copy. Every receiver grants each of its
// senders a window naming the length it expects, and every sender waits for it
// before returning, so ranks that disagree (sizes, roots) are caught rather than
// left waiting for each other.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "coll/core/context.h"

namespace uccl {

struct BlockPlan {
  explicit BlockPlan(int world)
      : sends(size_t(world), 0), recvs(size_t(world), 0), send_off(size_t(world), 0), send_len(size_t(world), 0),
        recv_off(size_t(world), 0), recv_len(size_t(world), 0) {}
  void send(int peer, uint64_t off, uint64_t len) { sends[size_t(peer)] = 1, send_off[size_t(peer)] = off, send_len[size_t(peer)] = len; }
  void recv(int peer, uint64_t off, uint64_t len) { recvs[size_t(peer)] = 1, recv_off[size_t(peer)] = off, recv_len[size_t(peer)] = len; }

  std::vector<uint8_t> sends, recvs;  // per peer: a block goes that way (even an empty one)
  std::vector<uint64_t> send_off, send_len, recv_off, recv_len;  // bytes, in the source / `out`
};

// Blocks are sent from the region `src_key` (offsets within it) and land in `out`
// (`out_bytes` long). The rank's own block is the caller's business: `own_block`
// copies it while the peers' windows are on their way.
void exchange_blocks(CollContext& c, uint64_t src_key, const LocalBuffer& out, uint64_t out_bytes,
                     const BlockPlan& plan, const char* what, const std::function<void()>& own_block = {});

}  // namespace uccl
