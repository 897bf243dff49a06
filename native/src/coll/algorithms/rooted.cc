#include <cstring>

#include "coll/algorithms/algorithms.h"
#include "coll/algorithms/block_exchange.h"
#include "coll/core/reduce_kernels.h"
#include "common/stream_copy.h"

namespace uccl {

// Chain root -> root+1 -> ...: each rank keeps a chunk and forwards it straight
// from its inbox slot, so chunks stream down the chain.
// The chain's last rank acknowledges to the root, so the root too learns of a rank
// that disagrees (it would otherwise return as soon as its data left).
void broadcast_chain(CollContext& c, const LocalBuffer& buf, uint64_t count, int root) {
  const uint64_t bytes = count * c.esize;
  const int pos = (c.rank - root + c.world) % c.world;
  const int next = pos + 1 < c.world ? c.peer(1) : kNobody;
  auto none = [](const char*, uint64_t, uint64_t) {};
  if (c.world == 1) return;
  if (pos == 0) {
    exchange(c, next, buf.key(), 0, bytes, kNobody, 0, none);
    exchange(c, kNobody, 0, 0, 0, c.peer(-1), 0, none);  // the chain end's acknowledgement
    return;
  }
  const int prev = c.peer(-1);
  for (uint64_t i = 0, n = CollContext::chunks(bytes, c.chunk); i < n; ++i) {
    uint64_t len = c.chunk_len(bytes, i);
    char* data = c.links.recv(prev, len);
    std::memcpy(buf.at(i * c.chunk), data, len);
    if (next != kNobody) c.links.send(next, c.links.inbox_key(), c.links.inbox_offset_of(data), len);
    c.links.release(prev);
  }
  if (next == kNobody) exchange(c, root, c.links.inbox_key(), 0, 0, kNobody, 0, none);
}

// Chain root+1 -> root+2 -> ... -> root: partial results are folded into the
// inbox slot in place and forwarded from there; the root folds into `out`.
void reduce_chain(CollContext& c, const LocalBuffer& in, const LocalBuffer& out, uint64_t count, int root) {
  const uint64_t bytes = count * c.esize;
  const int pos = (c.rank - root - 1 + 2 * c.world) % c.world;  // the root is last
  if (c.world == 1) {
    move_out(out.at(0), in.at(0), bytes, bytes);
    return;
  }
  const int next = c.peer(1);
  if (pos == 0) {
    exchange(c, next, in.key(), 0, bytes, kNobody, 0, [](const char*, uint64_t, uint64_t) {});
    return;
  }
  const int prev = c.peer(-1);
  const bool is_root = c.rank == root;
  for (uint64_t i = 0, n = CollContext::chunks(bytes, c.chunk); i < n; ++i) {
    uint64_t len = c.chunk_len(bytes, i), at = i * c.chunk;
    char* data = c.links.recv(prev, len);
    if (is_root) {
      reduce(out.at(at), in.at(at), data, len / c.esize, c.dtype, c.op);
    } else {
      reduce(data, in.at(at), data, len / c.esize, c.dtype, c.op);
      c.links.send(next, c.links.inbox_key(), c.links.inbox_offset_of(data), len);
    }
    c.links.release(prev);
  }
  if (is_root && c.op == ReduceOp::Avg) scale_by_inverse(out.at(0), count, c.dtype, c.world);
}

// The root receives one block from every rank (block_exchange.h): eager for small
// blocks, written straight into place for large ones.
void gather_direct(CollContext& c, const LocalBuffer& in, const LocalBuffer& out, uint64_t count, int root) {
  const uint64_t bytes = count * c.esize;
  BlockPlan plan(c.world);
  if (c.rank == root) {
    for (int p = 0; p < c.world; ++p)
      if (p != root) plan.recv(p, uint64_t(p) * bytes, bytes);
  } else {
    plan.send(root, 0, bytes);
  }
  const uint64_t out_bytes = c.rank == root ? bytes * uint64_t(c.world) : 0;
  exchange_blocks(c, in.key(), out, out_bytes, plan, "gather", [&] {
    if (c.rank == root) move_out(out.at(uint64_t(root) * bytes), in.at(0), bytes, out_bytes);
  });
}

// The root sends one block to every rank (block_exchange.h).
void scatter_direct(CollContext& c, const LocalBuffer& in, const LocalBuffer& out, uint64_t count, int root) {
  const uint64_t bytes = count * c.esize;
  BlockPlan plan(c.world);
  if (c.rank == root) {
    for (int p = 0; p < c.world; ++p)
      if (p != root) plan.send(p, uint64_t(p) * bytes, bytes);
  } else {
    plan.recv(root, 0, bytes);
  }
  exchange_blocks(c, in.key(), out, bytes, plan, "scatter", [&] {
    if (c.rank == root) move_out(out.at(0), in.at(uint64_t(root) * bytes), bytes, bytes);
  });
}

}  // namespace uccl
