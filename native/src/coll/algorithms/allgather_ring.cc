#include <cstring>

#include "coll/algorithms/algorithms.h"

namespace uccl {

void all_gather_ring(CollContext& c, const LocalBuffer& in, const LocalBuffer& out,
                     const std::vector<uint64_t>& counts, const std::vector<uint64_t>& displs) {
  const size_t es = c.esize;
  const size_t me = size_t(c.rank);
  if (in.at(0) != out.at(displs[me] * es)) std::memmove(out.at(displs[me] * es), in.at(0), counts[me] * es);
  // Step s: forward block r-s (ours first), receive block r-s-1.
  for (int s = 0; s < c.world - 1; ++s) {
    size_t sj = size_t(c.peer(-s)), rj = size_t(c.peer(-s - 1));
    exchange(c, c.peer(1), out.key(), displs[sj] * es, counts[sj] * es, c.peer(-1), counts[rj] * es,
             [&](const char* data, uint64_t o, uint64_t len) { std::memcpy(out.at(displs[rj] * es + o), data, len); });
  }
}

}  // namespace uccl
