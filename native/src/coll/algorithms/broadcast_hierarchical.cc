#include "coll/algorithms/algorithms.h"
#include "coll/algorithms/levels.h"
#include "coll/algorithms/subgroup.h"

namespace uccl {

namespace {

int index_in(const std::vector<int>& ranks, int r) {
  return int(std::find(ranks.begin(), ranks.end(), r) - ranks.begin());
}

// Broadcast of `count` elements from `root` among `among`. With a level that splits it
// into groups of L ranks: the root's group gets the whole vector (inside the group: a
// host's shared memory), then each rail carries one L-th of it from the root's group to
// the others one level up (so a group imports each byte once), and every other group
// all-gathers its shards.
void descend(const Hierarchy& h, size_t k, const std::vector<int>& among, int root, char* buf, uint64_t count) {
  CollContext& c = h.c;
  const Split s = split_among(h.topo, k, c.rank, among);
  if (s.flat) {
    if (among.size() == 1) return;
    Subgroup sub(c, among, c.op);
    broadcast_chain(sub.ctx(), h.buffer(buf, count), count, index_in(among, root));
    return;
  }
  size_t root_group = 0;
  for (size_t g = 0; g < s.groups.size(); ++g)
    if (index_in(s.groups[g], root) < int(s.groups[g].size())) root_group = g;
  const bool ours = s.group == root_group;
  if (ours) {
    Subgroup sub(c, s.mine(), c.op);
    broadcast_chain(sub.ctx(), h.buffer(buf, count), count, index_in(s.mine(), root));
  }
  const auto counts = even_parts(count, int(s.mine().size()));
  const auto displs = prefix_offsets(counts);
  char* shard = buf + displs[s.pos] * c.esize;
  descend(h, s.level + 1, s.rail(), s.groups[root_group][s.pos], shard, counts[s.pos]);
  if (!ours) {
    Subgroup sub(c, s.mine(), c.op);
    all_gather_ring(sub.ctx(), h.buffer(shard, counts[s.pos]), h.buffer(buf, count), counts, displs);
  }
}

}  // namespace

void broadcast_hierarchical(CollContext& c, const Topology& topo, RegCache& regs, const LocalBuffer& buf,
                            uint64_t count, int root) {
  descend(Hierarchy{c, topo, regs, Scratch{nullptr, 0}}, 0, all_ranks(c.world), root, buf.at(0), count);
}

}  // namespace uccl
