#include <cstring>

#include "coll/algorithms/algorithms.h"
#include "coll/core/reduce_kernels.h"

namespace uccl {

// Step s sends the partial of block r-s-1 and receives block r-s-2, folding our
// input in; the last step lands block r in `out`. Partials alternate between two
// halves of the workspace (one being sent while the other fills).
void reduce_scatter_ring(CollContext& c, const LocalBuffer& in, const LocalBuffer& out,
                         const std::vector<uint64_t>& counts, const Scratch& workspace) {
  const size_t es = c.esize;
  const int W = c.world;
  auto off = prefix_offsets(counts);
  uint64_t max_block = 0;
  for (auto n : counts) max_block = n > max_block ? n : max_block;
  const uint64_t half = max_block * es;
  if (W == 1) {
    std::memmove(out.at(0), in.at(0), counts[0] * es);
    if (c.op == ReduceOp::Avg) scale_by_inverse(out.at(0), counts[0], c.dtype, 1);
    return;
  }
  for (int s = 0; s < W - 1; ++s) {
    size_t sj = size_t(c.peer(-s - 1)), rj = size_t(c.peer(-s - 2));
    bool last = s == W - 2;
    uint64_t skey = s == 0 ? in.key() : workspace.key;
    uint64_t soff = s == 0 ? off[sj] * es : uint64_t((s - 1) % 2) * half;
    char* dst = last ? out.at(0) : workspace.data + uint64_t(s % 2) * half;
    exchange(c, c.peer(1), skey, soff, counts[sj] * es, c.peer(-1), counts[rj] * es,
             [&](const char* data, uint64_t o, uint64_t len) {
               reduce(dst + o, in.at(off[rj] * es + o), data, len / es, c.dtype, c.op);
             });
  }
  if (c.op == ReduceOp::Avg) scale_by_inverse(out.at(0), counts[size_t(c.rank)], c.dtype, W);
}

}  // namespace uccl
