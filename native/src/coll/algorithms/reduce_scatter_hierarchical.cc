#include <cstring>

#include "coll/algorithms/algorithms.h"
#include "coll/algorithms/levels.h"
#include "coll/algorithms/subgroup.h"
#include "coll/core/reduce_kernels.h"

namespace uccl {

namespace {

// Reduce-scatter among `among`: src holds one n-element block per rank of `among` (in
// that order), dst gets ours. With a level that splits `among` into G groups of L ranks,
// the blocks are regrouped by rail (the G blocks for the ranks at position j first, ...),
// reduce-scattered inside our group, so we hold the group's sum of our rail's blocks,
// and those are reduce-scattered along the rail one level up.
// `spare`: working memory past the ring's workspace.
void descend(const Hierarchy& h, size_t k, const std::vector<int>& among, const char* src, char* dst, uint64_t n,
             char* spare) {
  CollContext& c = h.c;
  const uint64_t block = n * c.esize;
  const Split s = split_among(h.topo, k, c.rank, among);
  if (s.flat) {
    if (among.size() == 1) {
      if (src != dst) std::memmove(dst, src, block);
    } else {
      Subgroup sub(c, among, h.phase_op());
      reduce_scatter_ring(sub.ctx(), h.buffer(src, n * among.size()), h.buffer(dst, n),
                          std::vector<uint64_t>(among.size(), n), h.scratch);
    }
    if (c.op == ReduceOp::Avg) scale_by_inverse(dst, n, c.dtype, c.world);
    return;
  }
  const size_t L = s.mine().size(), G = s.groups.size();
  auto index_of = [&](int r) { return uint64_t(std::find(among.begin(), among.end(), r) - among.begin()); };
  char* by_rail = h.carve(spare, (L * G + G) * block);
  for (size_t j = 0; j < L; ++j)
    for (size_t g = 0; g < G; ++g)
      std::memcpy(by_rail + (j * G + g) * block, src + index_of(s.groups[g][j]) * block, block);
  char* rail_blocks = by_rail + L * G * block;
  {
    Subgroup sub(c, s.mine(), h.phase_op());
    reduce_scatter_ring(sub.ctx(), h.buffer(by_rail, L * G * n), h.buffer(rail_blocks, G * n),
                        std::vector<uint64_t>(L, G * n), h.scratch);
  }
  descend(h, s.level + 1, s.rail(), rail_blocks, dst, n, rail_blocks + G * block);
}

}  // namespace

// Across each level a rank sends only its rail's blocks, each once (the minimum a
// group must export); the regrouping copies stay in this rank's memory.
void reduce_scatter_hierarchical(CollContext& c, const Topology& topo, RegCache& regs, const LocalBuffer& in,
                                 const LocalBuffer& out, uint64_t n, const Scratch& scratch) {
  const uint64_t total = n * uint64_t(c.world) * c.esize;
  descend(Hierarchy{c, topo, regs, scratch}, 0, all_ranks(c.world), in.at(0), out.at(0), n,
          scratch.data + hierarchical_scratch_bytes(total, c.esize, c.chunk));
}

}  // namespace uccl
