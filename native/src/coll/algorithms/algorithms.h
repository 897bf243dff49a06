// The collective algorithms. Counts and displacements are in elements; every
// rank passes the same sizes (the links check). Each is a small unit in its own file.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "coll/core/context.h"
#include "coll/core/reg_cache.h"
#include "coll/core/topology.h"

namespace uccl {

// allreduce_ring.cc: pipelined reduce-scatter then all-gather around a ring
// (`scratch`: one chunk).
void all_reduce_ring(CollContext& c, const LocalBuffer& in, const LocalBuffer& out, uint64_t count,
                     const Scratch& scratch);
// allreduce_recursive.cc: recursive doubling (folding extra ranks), for small messages.
void all_reduce_recursive_doubling(CollContext& c, const LocalBuffer& in, const LocalBuffer& out, uint64_t count);
// allgather_ring.cc: blocks of (possibly) different sizes travel around the ring.
void all_gather_ring(CollContext& c, const LocalBuffer& in, const LocalBuffer& out,
                     const std::vector<uint64_t>& counts, const std::vector<uint64_t>& displs);
// reduce_scatter_ring.cc: partial sums travel the ring, each rank ends with its block.
void reduce_scatter_ring(CollContext& c, const LocalBuffer& in, const LocalBuffer& out,
                         const std::vector<uint64_t>& counts, const Scratch& workspace);
// alltoall_pairwise.cc: W-1 rounds, in round s send to rank+s and receive from rank-s.
// `staging` (in place, more than two ranks): room for the input, which is copied aside first.
void all_to_all_pairwise(CollContext& c, const LocalBuffer& in, uint64_t in_bytes, const LocalBuffer& out,
                         const std::vector<uint64_t>& send_counts, const std::vector<uint64_t>& send_displs,
                         const std::vector<uint64_t>& recv_counts, const std::vector<uint64_t>& recv_displs,
                         const Scratch& staging);
// rooted.cc: pipelined chains from / to the root, and direct gather / scatter.
void broadcast_chain(CollContext& c, const LocalBuffer& buf, uint64_t count, int root);
void reduce_chain(CollContext& c, const LocalBuffer& in, const LocalBuffer& out, uint64_t count, int root);
void gather_direct(CollContext& c, const LocalBuffer& in, const LocalBuffer& out, uint64_t count, int root);
void scatter_direct(CollContext& c, const LocalBuffer& in, const LocalBuffer& out, uint64_t count, int root);
// *_direct.cc: one-sided access to peers' buffers opened for the call (windows.h):
// each byte is copied once, straight to where it belongs. For shared memory.
// all_reduce: `published` (data nullptr: none) is room in the shared arena for this
// rank's block and its progress lines (published.h), when every peer is on this host.
void all_reduce_direct(CollContext& c, const LocalBuffer& in, const LocalBuffer& out, uint64_t count,
                       const Scratch& scratch, const Scratch& published);
void reduce_scatter_direct(CollContext& c, const LocalBuffer& in, const LocalBuffer& out,
                           const std::vector<uint64_t>& counts, const Scratch& scratch);
void all_gather_direct(CollContext& c, const LocalBuffer& in, const LocalBuffer& out,
                       const std::vector<uint64_t>& counts, const std::vector<uint64_t>& displs);
void all_to_all_direct(CollContext& c, const LocalBuffer& in, uint64_t in_bytes, const LocalBuffer& out,
                       uint64_t out_bytes, const std::vector<uint64_t>& send_counts,
                       const std::vector<uint64_t>& send_displs, const std::vector<uint64_t>& recv_counts,
                       const std::vector<uint64_t>& recv_displs, const Scratch& staging);
void broadcast_direct(CollContext& c, const LocalBuffer& buf, uint64_t count, int root);
// alltoall_aggregated.cc: with several ranks per host, one message per rail and host pair
// crosses between hosts (local exchange over shared memory first). Needs hosts of equal
// size, several ranks each (all_to_all_aggregates); `scratch(bytes)`: working memory,
// asked for twice (headers, then about twice the input), the second may move the first.
bool all_to_all_aggregates(const Topology& topo, int rank, int world);
void all_to_all_aggregated(CollContext& c, const Topology& topo, const LocalBuffer& in, const LocalBuffer& out,
                           const std::vector<uint64_t>& send_counts, const std::vector<uint64_t>& send_displs,
                           const std::vector<uint64_t>& recv_counts, const std::vector<uint64_t>& recv_displs,
                           const std::function<Scratch(uint64_t)>& scratch);
// allreduce_hierarchical.cc: reduce-scatter inside each level's groups (a host, then a
// leaf), all-reduce across them rank by rank (rails), all-gather back, with the
// link-based algorithms run in subgroups, levels pipelined. `scratch`: all_reduce_hierarchical_scratch_bytes().
void all_reduce_hierarchical(CollContext& c, const Topology& topo, RegCache& regs, const LocalBuffer& in,
                             const LocalBuffer& out, uint64_t count, const Scratch& scratch);
uint64_t hierarchical_scratch_bytes(uint64_t bytes, uint64_t esize, uint64_t chunk);
// What all_reduce_hierarchical needs (its levels run at once, lanes.h).
uint64_t all_reduce_hierarchical_scratch_bytes(const Topology& topo, int rank, int world, uint64_t bytes,
                                               uint64_t esize, uint64_t chunk);
// The same per level for the others (*_hierarchical.cc), with equal blocks of n elements.
// Scratch: reduce_scatter hierarchical_scratch_bytes(W n) + 3 W n elements, all_gather
// 3 W n (a level takes 1.5x what it regroups, and each level regroups at most half of
// the one below), reduce hierarchical_scratch_bytes(count) + 2 count (3 given, plus 2
// elements per level for counts that do not divide); broadcast none.
void reduce_scatter_hierarchical(CollContext& c, const Topology& topo, RegCache& regs, const LocalBuffer& in,
                                 const LocalBuffer& out, uint64_t n, const Scratch& scratch);
void all_gather_hierarchical(CollContext& c, const Topology& topo, RegCache& regs, const LocalBuffer& in,
                             const LocalBuffer& out, uint64_t n, const Scratch& scratch);
void broadcast_hierarchical(CollContext& c, const Topology& topo, RegCache& regs, const LocalBuffer& buf,
                            uint64_t count, int root);
void reduce_hierarchical(CollContext& c, const Topology& topo, RegCache& regs, const LocalBuffer& in,
                         const LocalBuffer& out, uint64_t count, int root, const Scratch& scratch);
// barrier.cc: dissemination, log2(W) rounds of empty messages.
void barrier_dissemination(CollContext& c);

}  // namespace uccl
