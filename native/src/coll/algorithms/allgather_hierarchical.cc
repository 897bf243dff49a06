#include <cstring>

#include "coll/algorithms/algorithms.h"
#include "coll/algorithms/levels.h"
#include "coll/algorithms/subgroup.h"

namespace uccl {

namespace {

// All-gather among `among`: src is our n-element block, dst gets every rank's, in the
// order of `among`. With a level that splits `among` into G groups of L ranks, our rail
// gathers its blocks one level up first (each crosses that level once), then our group
// gathers its rails' blocks and they are put in rank order. `spare`: working memory.
void descend(const Hierarchy& h, size_t k, const std::vector<int>& among, const char* src, char* dst, uint64_t n,
             char* spare) {
  CollContext& c = h.c;
  const uint64_t block = n * c.esize;
  const Split s = split_among(h.topo, k, c.rank, among);
  if (s.flat) {
    const size_t W = among.size();
    if (W == 1) {
      if (src != dst) std::memmove(dst, src, block);
      return;
    }
    std::vector<uint64_t> counts(W, n), displs(W);
    for (size_t j = 0; j < W; ++j) displs[j] = j * n;
    Subgroup sub(c, among, c.op);
    all_gather_ring(sub.ctx(), h.buffer(src, n), h.buffer(dst, n * W), counts, displs);
    return;
  }
  const size_t L = s.mine().size(), G = s.groups.size();
  char* rail_blocks = h.carve(spare, (G + L * G) * block);
  char* by_rail = rail_blocks + G * block;
  descend(h, s.level + 1, s.rail(), src, rail_blocks, n, by_rail + L * G * block);
  {
    std::vector<uint64_t> counts(L, G * n), displs(L);
    for (size_t j = 0; j < L; ++j) displs[j] = j * G * n;
    Subgroup sub(c, s.mine(), c.op);
    all_gather_ring(sub.ctx(), h.buffer(rail_blocks, G * n), h.buffer(by_rail, L * G * n), counts, displs);
  }
  auto index_of = [&](int r) { return uint64_t(std::find(among.begin(), among.end(), r) - among.begin()); };
  for (size_t j = 0; j < L; ++j)
    for (size_t g = 0; g < G; ++g)
      std::memcpy(dst + index_of(s.groups[g][j]) * block, by_rail + (j * G + g) * block, block);
}

}  // namespace

// `in` may be our block of `out` (in place): it is read before `out` is written.
void all_gather_hierarchical(CollContext& c, const Topology& topo, RegCache& regs, const LocalBuffer& in,
                             const LocalBuffer& out, uint64_t n, const Scratch& scratch) {
  descend(Hierarchy{c, topo, regs, scratch}, 0, all_ranks(c.world), in.at(0), out.at(0), n, scratch.data);
}

}  // namespace uccl
