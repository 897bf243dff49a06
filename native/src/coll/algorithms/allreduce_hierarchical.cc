#include <algorithm>
#include <cstring>

#include "coll/algorithms/algorithms.h"
#include "coll/algorithms/lanes.h"
#include "coll/algorithms/levels.h"
#include "coll/algorithms/subgroup.h"
#include "coll/core/reduce_kernels.h"

namespace uccl {

namespace {

// The vector is cut into pieces so that each level's links carry one while the levels
// below work on others: as many as leave the top rail at least kRailPieceBytes per piece
// (larger messages keep a slow link busy), at most kMaxPieces. A function of the size and
// the topology's shape, so the same on every rank.
constexpr uint64_t kRailPieceBytes = 256 << 10;
constexpr uint64_t kMaxPieces = 8;

uint64_t aligned(uint64_t n) { return (n + 63) & ~uint64_t(63); }
uint64_t ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

// The levels that split the ranks, from the bottom: the group size at each.
std::vector<uint64_t> group_sizes(const Topology& topo, int rank, int world) {
  std::vector<uint64_t> sizes;
  std::vector<int> among = all_ranks(world);
  for (size_t k = 0;;) {
    const Split s = split_among(topo, k, rank, among);
    if (s.flat) return sizes;
    sizes.push_back(s.mine().size());
    among = s.rail();
    k = s.level + 1;
  }
}

uint64_t piece_count(const std::vector<uint64_t>& sizes, uint64_t bytes) {
  uint64_t split = 1;
  for (uint64_t L : sizes) split *= L;
  return std::clamp<uint64_t>(bytes / (split * kRailPieceBytes), 1, kMaxPieces);
}

// Working memory [p, p + bytes) of one lane, registered on its own (the ring algorithms
// address their workspace from its start).
Scratch lane_scratch(const Hierarchy& h, char* p, uint64_t bytes) {
  return Scratch{h.carve(p, bytes), h.regs.key(uint64_t(p), bytes), bytes};
}

// All-reduce of the pieces `feed` hands over, among `among`, using the levels from k up.
// `largest`: the most elements a piece has here; `ws`: this lane's and those above's
// working memory. At a level that splits `among`: each piece is reduce-scattered inside
// our group, our shard all-reduced along our rail by the lane above, and the piece
// all-gathered inside the group. This lane reduce-scatters piece p + 1 before it gathers
// piece p (a fixed order, the same on every rank), so the rail is never left waiting.
void run_level(const Hierarchy& h, size_t k, const std::vector<int>& among, PieceFeed& feed, uint64_t largest,
               const Scratch& ws) {
  CollContext& c = h.c;
  const size_t P = feed.pieces();
  const Split s = split_among(h.topo, k, c.rank, among);
  if (s.flat) {  // a ring among what is left; Avg applied here, once
    for (size_t p = 0; p < P; ++p) {
      PieceView v;
      if (!feed.next(p, &v)) return;
      if (among.size() == 1) {
        if (v.src != v.dst) std::memmove(v.dst, v.src, v.count * c.esize);
      } else {
        Subgroup sub(c, among, h.phase_op());
        all_reduce_ring(sub.ctx(), h.buffer(v.src, v.count), h.buffer(v.dst, v.count), v.count, ws);
      }
      if (c.op == ReduceOp::Avg) scale_by_inverse(v.dst, v.count, c.dtype, c.world);
      feed.done(p);
    }
    return;
  }
  const int L = int(s.mine().size());
  const uint64_t group_bytes = aligned(2 * ceil_div(largest, uint64_t(L)) * c.esize);
  const Scratch group_ws = lane_scratch(h, ws.data, group_bytes);
  const Scratch rail_ws = lane_scratch(h, ws.data + group_bytes, ws.bytes - group_bytes);
  struct Piece {
    PieceView v;
    std::vector<uint64_t> counts, displs;  // its blocks in the group
    char* shard;                           // ours
  };
  std::vector<Piece> pieces(P);
  auto reduce_scatter = [&](size_t p) {  // false: the lane below stopped
    Piece& x = pieces[p];
    if (!feed.next(p, &x.v)) return false;
    x.counts = even_parts(x.v.count, L);
    x.displs = prefix_offsets(x.counts);
    x.shard = x.v.dst + x.displs[s.pos] * c.esize;
    Subgroup sub(c, s.mine(), h.phase_op());
    reduce_scatter_ring(sub.ctx(), h.buffer(x.v.src, x.v.count), h.buffer(x.shard, x.counts[s.pos]), x.counts,
                        group_ws);
    return true;
  };
  auto all_gather = [&](size_t p) {
    Piece& x = pieces[p];
    Subgroup sub(c, s.mine(), h.phase_op());
    all_gather_ring(sub.ctx(), h.buffer(x.shard, x.counts[s.pos]), h.buffer(x.v.dst, x.v.count), x.counts,
                    x.displs);
  };
  PieceFeed up(P, c.ep.config().timeout_s);
  auto hand_over = [&](size_t p) { up.hand_over(p, PieceView{pieces[p].shard, pieces[p].shard, pieces[p].counts[s.pos]}); };
  const std::vector<int> rail = s.rail();
  std::exception_ptr failure;
  {
    Lane above(c.links, up, [&](PieceFeed& f) { run_level(h, s.level + 1, rail, f, ceil_div(largest, L), rail_ws); });
    try {
      if (!reduce_scatter(0)) return;
      hand_over(0);
      for (size_t p = 0; p < P; ++p) {
        if (p + 1 < P) {
          if (!reduce_scatter(p + 1)) return;
          hand_over(p + 1);
        }
        up.wait_done(p);
        all_gather(p);
        feed.done(p);
      }
    } catch (...) {
      failure = std::current_exception();
    }
  }  // the lane above is joined (stopped first, if this one failed)
  if (failure) {
    if (auto first = up.error()) std::rethrow_exception(first);  // ours failed because it did
    std::rethrow_exception(failure);
  }
}

}  // namespace

// Each level's links carry each byte once: a host's ranks split the vector among
// themselves over shared memory, so only one shard per rank (1/L of the vector) goes
// out on the network, along its rail; a leaf's hosts do the same one level up, so a
// leaf exports and imports each byte once. The levels run as a pipeline of pieces
// (lanes.h). A level whose groups differ in size stops the descent: the ranks left do
// a flat ring (correct, not cheaper).
void all_reduce_hierarchical(CollContext& c, const Topology& topo, RegCache& regs, const LocalBuffer& in,
                             const LocalBuffer& out, uint64_t count, const Scratch& scratch) {
  const auto counts = even_parts(count, int(piece_count(group_sizes(topo, c.rank, c.world), count * c.esize)));
  const auto offs = prefix_offsets(counts);
  PieceFeed feed(counts.size(), c.ep.config().timeout_s);
  for (size_t p = 0; p < counts.size(); ++p)
    feed.hand_over(p, PieceView{in.at(offs[p] * c.esize), out.at(offs[p] * c.esize), counts[p]});
  run_level(Hierarchy{c, topo, regs, scratch}, 0, all_ranks(c.world), feed, counts[0], scratch);
}

uint64_t all_reduce_hierarchical_scratch_bytes(const Topology& topo, int rank, int world, uint64_t bytes,
                                               uint64_t esize, uint64_t chunk) {
  const auto sizes = group_sizes(topo, rank, world);
  uint64_t largest = ceil_div(bytes / esize, piece_count(sizes, bytes)), need = 0;
  for (uint64_t L : sizes) {  // each level's lane: two of its largest blocks
    need += aligned(2 * ceil_div(largest, L) * esize);
    largest = ceil_div(largest, L);
  }
  return need + chunk;  // the flat ring's
}

uint64_t hierarchical_scratch_bytes(uint64_t bytes, uint64_t esize, uint64_t chunk) {
  // A ring reduce-scatter among two or more ranks needs two of its largest blocks
  // (at most half the vector, rounded up); the ring all-reduce needs one chunk.
  uint64_t rs = bytes + 2 * esize;
  return rs > chunk ? rs : chunk;
}

}  // namespace uccl
