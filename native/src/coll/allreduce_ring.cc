#include <cstring>

#include "coll/algorithms.h"
#include "coll/reduce_kernels.h"

namespace uccl {

void all_reduce_ring(CollContext& c, const LocalBuffer& in, const LocalBuffer& out, uint64_t count) {
  const int W = c.world;
  const size_t es = c.esize;
  auto seg = even_parts(count, W);
  auto off = prefix_offsets(seg);
  const int right = c.peer(1), left = c.peer(-1);
  // Reduce-scatter: in step s send segment r-s, receive r-s-1 and fold our input
  // into it; partial sums live in `out`. Afterwards segment r+1 is final here.
  for (int s = 0; s < W - 1; ++s) {
    int sj = c.peer(-s), rj = c.peer(-s - 1);
    const LocalBuffer& src = s == 0 ? in : out;
    exchange(c, right, src.key(), off[size_t(sj)] * es, seg[size_t(sj)] * es, left, seg[size_t(rj)] * es,
             [&](const char* data, uint64_t o, uint64_t len) {
               uint64_t at = off[size_t(rj)] * es + o;
               reduce(out.at(at), in.at(at), data, len / es, c.dtype, c.op);
             });
  }
  int mine = c.peer(1);
  if (c.op == ReduceOp::Avg) scale_by_inverse(out.at(off[size_t(mine)] * es), seg[size_t(mine)], c.dtype, W);
  // All-gather: final segments travel the ring once.
  for (int s = 0; s < W - 1; ++s) {
    int sj = c.peer(1 - s), rj = c.peer(-s);
    exchange(c, right, out.key(), off[size_t(sj)] * es, seg[size_t(sj)] * es, left, seg[size_t(rj)] * es,
             [&](const char* data, uint64_t o, uint64_t len) { std::memcpy(out.at(off[size_t(rj)] * es + o), data, len); });
  }
}

}  // namespace uccl
