#include "coll/algorithms/algorithms.h"
#include "coll/core/reduce_kernels.h"
#include "common/stream_copy.h"

namespace uccl {

// Reduce-scatter then all-gather around the ring, pipelined in chunks. The last
// reduce-scatter step and the whole all-gather run chunk by chunk in one loop: a
// chunk's final sum goes from a cache-resident scratch straight to the right
// neighbour and (streamed) to our output, and each chunk arriving in the
// all-gather is stored and forwarded from the inbox slot it landed in. Messages on
// every link keep one order (chunk i: its reduce-scatter part, then its all-gather
// parts), so each rank reads them as its left neighbour sent them.
void all_reduce_ring(CollContext& c, const LocalBuffer& in, const LocalBuffer& out, uint64_t count,
                     const Scratch& scratch) {
  const int W = c.world;
  const uint64_t es = c.esize, bytes = count * es;
  auto seg = even_parts(count, W);
  auto off = prefix_offsets(seg);
  for (size_t j = 0; j < seg.size(); ++j) seg[j] *= es, off[j] *= es;
  const int right = c.peer(1), left = c.peer(-1);
  // Reduce-scatter but its last step: in step s send segment r-s, receive r-s-1 and
  // fold our input into it; partial sums live in `out`.
  for (int s = 0; s < W - 2; ++s) {
    int sj = c.peer(-s), rj = c.peer(-s - 1);
    const LocalBuffer& src = s == 0 ? in : out;
    exchange(c, right, src.key(), off[size_t(sj)], seg[size_t(sj)], left, seg[size_t(rj)],
             [&](const char* data, uint64_t o, uint64_t len) {
               uint64_t at = off[size_t(rj)] + o;
               reduce(out.at(at), in.at(at), data, len / es, c.dtype, c.op);
             });
  }
  const size_t last_send = size_t(c.peer(2 - W)), mine = size_t(c.peer(1));
  const LocalBuffer& partial = W == 2 ? in : out;
  auto chunks = [&](size_t j) { return CollContext::chunks(seg[j], c.chunk); };
  uint64_t n = 0;
  for (size_t j = 0; j < seg.size(); ++j) n = chunks(j) > n ? chunks(j) : n;
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t o = i * c.chunk;
    if (i < chunks(last_send)) c.links.send(right, partial.key(), off[last_send] + o, c.chunk_len(seg[last_send], i));
    if (i < chunks(mine)) {  // our segment's final value, then all-gather step 0 sends it
      const uint64_t len = c.chunk_len(seg[mine], i);
      const char* data = c.links.recv(left, len);
      reduce(scratch.data, in.at(off[mine] + o), data, len / es, c.dtype, c.op);
      c.links.release(left);
      if (c.op == ReduceOp::Avg) scale_by_inverse(scratch.data, len / es, c.dtype, W);
      copy_out(out.at(off[mine] + o), scratch.data, len, bytes);
      c.links.send(right, scratch.key, 0, len);
    }
    for (int s = 0; s < W - 1; ++s) {  // all-gather step s: segment r-s arrives, travels on
      const size_t j = size_t(c.peer(-s));
      if (i >= chunks(j)) continue;
      const uint64_t len = c.chunk_len(seg[j], i);
      char* data = c.links.recv(left, len);
      copy_out(out.at(off[j] + o), data, len, bytes);
      if (s < W - 2) c.links.send(right, c.links.inbox_key(), c.links.inbox_offset_of(data), len);
      c.links.release(left);
    }
  }
}

}  // namespace uccl
