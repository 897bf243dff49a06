#include <cstring>

#include "coll/algorithms/algorithms.h"
#include "coll/algorithms/levels.h"
#include "coll/algorithms/subgroup.h"
#include "coll/core/reduce_kernels.h"

namespace uccl {

namespace {

int index_in(const std::vector<int>& ranks, int r) {
  return int(std::find(ranks.begin(), ranks.end(), r) - ranks.begin());
}

// Reduce of `count` elements to `root` among `among` (dst: the root's output). With a
// level that splits it into groups of L ranks: reduce-scatter inside every group, each
// shard reduced along its rail to the root's group one level up (a group exports each
// byte once), then the root's group gathers the shards. `spare`: working memory past the
// ring's workspace.
void descend(const Hierarchy& h, size_t k, const std::vector<int>& among, int root, const char* src, char* dst,
             uint64_t count, char* spare) {
  CollContext& c = h.c;
  const Split s = split_among(h.topo, k, c.rank, among);
  if (s.flat) {
    if (among.size() == 1) {
      if (src != dst) std::memmove(dst, src, count * c.esize);
    } else {
      Subgroup sub(c, among, h.phase_op());
      const LocalBuffer in = h.buffer(src, count);
      reduce_chain(sub.ctx(), in, c.rank == root ? h.buffer(dst, count) : in, count, index_in(among, root));
    }
    if (c.rank == root && c.op == ReduceOp::Avg) scale_by_inverse(dst, count, c.dtype, c.world);
    return;
  }
  size_t root_group = 0;
  for (size_t g = 0; g < s.groups.size(); ++g)
    if (index_in(s.groups[g], root) < int(s.groups[g].size())) root_group = g;
  const auto counts = even_parts(count, int(s.mine().size()));
  const auto displs = prefix_offsets(counts);
  const uint64_t mine = counts[s.pos] * c.esize;
  char* shard = h.carve(spare, 2 * mine + (s.group == root_group ? count * c.esize : 0));
  char* reduced = shard + mine;
  char* whole = reduced + mine;  // the root's group members but the root gather here
  {
    Subgroup sub(c, s.mine(), h.phase_op());
    reduce_scatter_ring(sub.ctx(), h.buffer(src, count), h.buffer(shard, counts[s.pos]), counts, h.scratch);
  }
  const int rail_root = s.groups[root_group][s.pos];
  descend(h, s.level + 1, s.rail(), rail_root, shard, reduced, counts[s.pos], whole);
  if (s.group != root_group) return;
  char* out = c.rank == root ? dst : whole;
  Subgroup sub(c, s.mine(), c.op);
  all_gather_ring(sub.ctx(), h.buffer(reduced, counts[s.pos]), h.buffer(out, count), counts, displs);
}

}  // namespace

void reduce_hierarchical(CollContext& c, const Topology& topo, RegCache& regs, const LocalBuffer& in,
                         const LocalBuffer& out, uint64_t count, int root, const Scratch& scratch) {
  const uint64_t bytes = count * c.esize;
  descend(Hierarchy{c, topo, regs, scratch}, 0, all_ranks(c.world), root, in.at(0), out.at(0), count,
          scratch.data + hierarchical_scratch_bytes(bytes, c.esize, c.chunk));
}

}  // namespace uccl
