#include <algorithm>
#include <cstring>

#include "coll/algorithms/algorithms.h"
#include "coll/algorithms/subgroup.h"
#include "coll/core/reduce_kernels.h"

namespace uccl {

namespace {

// One call's state while it descends the topology's levels.
struct Descent {
  CollContext& c;
  const Topology& topo;
  RegCache& regs;
  const Scratch& scratch;

  LocalBuffer buffer(const char* p, uint64_t count) { return LocalBuffer(regs, p, count * c.esize); }

  // The groups `among` falls into at level k, each in rank order.
  std::vector<std::vector<int>> groups(size_t k, const std::vector<int>& among) const {
    std::vector<std::vector<int>> out;
    std::vector<int> seen;
    for (int r : among) {
      if (std::find(seen.begin(), seen.end(), topo.levels[k][size_t(r)]) != seen.end()) continue;
      seen.push_back(topo.levels[k][size_t(r)]);
      out.push_back(topo.mates(k, r, among));
    }
    return out;
  }

  // All-reduce of `count` elements among `among`, from src into dst (both in this rank's
  // memory, possibly the same), using the levels from k up.
  void all_reduce(size_t k, const std::vector<int>& among, const char* src, char* dst, uint64_t count) {
    for (; k < topo.levels.size(); ++k) {
      auto gs = groups(k, among);
      if (gs.size() == 1 || gs.size() == among.size()) continue;  // this level does not split `among`
      bool uniform = true;
      for (const auto& g : gs) uniform &= g.size() == gs[0].size();
      if (!uniform) break;  // hosts with different rank counts: flat over `among`
      split(k, among, gs, src, dst, count);
      return;
    }
    flat(among, src, dst, count);
  }

  // Reduce-scatter inside our level-k group, all-reduce our shard with the ranks at the
  // same position in the other groups (a rail: one level up), all-gather inside the group.
  void split(size_t k, const std::vector<int>& among, const std::vector<std::vector<int>>& gs, const char* src,
             char* dst, uint64_t count) {
    const std::vector<int> group = topo.mates(k, c.rank, among);
    const size_t me = size_t(std::find(group.begin(), group.end(), c.rank) - group.begin());
    std::vector<int> rail;
    for (const auto& g : gs) rail.push_back(g[me]);
    const auto counts = even_parts(count, int(group.size()));
    const auto displs = prefix_offsets(counts);
    char* shard = dst + displs[me] * c.esize;
    {
      Subgroup sub(c, group, ReduceOp::Sum);
      reduce_scatter_ring(sub.ctx(), buffer(src, count), buffer(shard, counts[me]), counts, scratch);
    }
    all_reduce(k + 1, rail, shard, shard, counts[me]);
    Subgroup sub(c, group, ReduceOp::Sum);
    all_gather_ring(sub.ctx(), buffer(shard, counts[me]), buffer(dst, count), counts, displs);
  }

  // The top of the descent: a ring among `among`; Avg is applied here, once, to the sum of
  // every rank (the phases below only add).
  void flat(const std::vector<int>& among, const char* src, char* dst, uint64_t count) {
    if (among.size() == 1) {
      if (src != dst) std::memmove(dst, src, count * c.esize);
    } else {
      Subgroup sub(c, among, ReduceOp::Sum);
      all_reduce_ring(sub.ctx(), buffer(src, count), buffer(dst, count), count, scratch);
    }
    if (c.op == ReduceOp::Avg) scale_by_inverse(dst, count, c.dtype, c.world);
  }
};

}  // namespace

// Each level's links carry each byte once: a host's ranks split the vector among
// themselves over shared memory, so only one shard per rank (1/L of the vector) goes
// out on the network, along its rail; a leaf's hosts do the same one level up, so a
// leaf exports and imports each byte once. Levels whose groups differ in size stop
// the descent: the ranks left do a flat ring (correct, not cheaper).
void all_reduce_hierarchical(CollContext& c, const Topology& topo, RegCache& regs, const LocalBuffer& in,
                             const LocalBuffer& out, uint64_t count, const Scratch& scratch) {
  std::vector<int> everyone(size_t(c.world));
  for (int r = 0; r < c.world; ++r) everyone[size_t(r)] = r;
  Descent{c, topo, regs, scratch}.all_reduce(0, everyone, in.at(0), out.at(0), count);
}

uint64_t hierarchical_scratch_bytes(uint64_t bytes, uint64_t esize, uint64_t chunk) {
  // A ring reduce-scatter among two or more ranks needs two of its largest blocks
  // (at most half the vector, rounded up); the ring all-reduce needs one chunk.
  uint64_t rs = bytes + 2 * esize;
  return rs > chunk ? rs : chunk;
}

}  // namespace uccl
