#include <cstring>

#include "coll/algorithms/algorithms.h"
#include "coll/algorithms/levels.h"
#include "coll/algorithms/subgroup.h"
#include "coll/core/reduce_kernels.h"

namespace uccl {

namespace {

// All-reduce of `count` elements among `among`, from src into dst (this rank's memory,
// possibly the same), using the levels from k up: reduce-scatter inside our group, the
// shard all-reduced along our rail one level up, all-gather inside the group.
void descend(const Hierarchy& h, size_t k, const std::vector<int>& among, const char* src, char* dst,
             uint64_t count) {
  CollContext& c = h.c;
  const Split s = split_among(h.topo, k, c.rank, among);
  if (s.flat) {  // a ring among what is left; Avg applied here, once
    if (among.size() == 1) {
      if (src != dst) std::memmove(dst, src, count * c.esize);
    } else {
      Subgroup sub(c, among, h.phase_op());
      all_reduce_ring(sub.ctx(), h.buffer(src, count), h.buffer(dst, count), count, h.scratch);
    }
    if (c.op == ReduceOp::Avg) scale_by_inverse(dst, count, c.dtype, c.world);
    return;
  }
  const auto counts = even_parts(count, int(s.mine().size()));
  const auto displs = prefix_offsets(counts);
  char* shard = dst + displs[s.pos] * c.esize;
  {
    Subgroup sub(c, s.mine(), h.phase_op());
    reduce_scatter_ring(sub.ctx(), h.buffer(src, count), h.buffer(shard, counts[s.pos]), counts, h.scratch);
  }
  descend(h, s.level + 1, s.rail(), shard, shard, counts[s.pos]);
  Subgroup sub(c, s.mine(), h.phase_op());
  all_gather_ring(sub.ctx(), h.buffer(shard, counts[s.pos]), h.buffer(dst, count), counts, displs);
}

}  // namespace

// Each level's links carry each byte once: a host's ranks split the vector among
// themselves over shared memory, so only one shard per rank (1/L of the vector) goes
// out on the network, along its rail; a leaf's hosts do the same one level up, so a
// leaf exports and imports each byte once. A level whose groups differ in size stops
// the descent: the ranks left do a flat ring (correct, not cheaper).
void all_reduce_hierarchical(CollContext& c, const Topology& topo, RegCache& regs, const LocalBuffer& in,
                             const LocalBuffer& out, uint64_t count, const Scratch& scratch) {
  descend(Hierarchy{c, topo, regs, scratch}, 0, all_ranks(c.world), in.at(0), out.at(0), count);
}

uint64_t hierarchical_scratch_bytes(uint64_t bytes, uint64_t esize, uint64_t chunk) {
  // A ring reduce-scatter among two or more ranks needs two of its largest blocks
  // (at most half the vector, rounded up); the ring all-reduce needs one chunk.
  uint64_t rs = bytes + 2 * esize;
  return rs > chunk ? rs : chunk;
}

}  // namespace uccl
