#include <cstring>

#include "coll/algorithms/algorithms.h"
#include "coll/core/reduce_kernels.h"

namespace uccl {

// Messages fit one chunk here (the tuner guarantees it), so each exchange is one
// round trip. Ranks beyond the largest power of two fold into a partner first.
void all_reduce_recursive_doubling(CollContext& c, const LocalBuffer& in, const LocalBuffer& out, uint64_t count) {
  const uint64_t bytes = count * c.esize;
  if (in.at(0) != out.at(0)) std::memcpy(out.at(0), in.at(0), bytes);
  int p2 = 1;
  while (p2 * 2 <= c.world) p2 *= 2;
  const int extra = c.world - p2;
  auto fold_in = [&](const char* data, uint64_t o, uint64_t len) {
    reduce(out.at(o), out.at(o), data, len / c.esize, c.dtype, c.op);
  };
  auto copy_in = [&](const char* data, uint64_t o, uint64_t len) { std::memcpy(out.at(o), data, len); };
  if (c.rank >= p2) {  // hand our data to a partner, get the result back
    int partner = c.rank - p2;
    exchange(c, partner, out.key(), 0, bytes, kNobody, 0, copy_in);
    exchange(c, kNobody, 0, 0, 0, partner, bytes, copy_in);
  } else {
    if (c.rank < extra) exchange(c, kNobody, 0, 0, 0, c.rank + p2, bytes, fold_in);
    for (int mask = 1; mask < p2; mask <<= 1) {
      int partner = c.rank ^ mask;
      exchange(c, partner, out.key(), 0, bytes, partner, bytes, fold_in);
    }
    if (c.op == ReduceOp::Avg) scale_by_inverse(out.at(0), count, c.dtype, c.world);
    if (c.rank < extra) exchange(c, c.rank + p2, out.key(), 0, bytes, kNobody, 0, copy_in);
  }
}

}  // namespace uccl
