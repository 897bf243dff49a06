// The hierarchical algorithms' view of the topology: how a set of ranks splits at the
// first level (from some level up) that splits it into groups of equal size, and which
// ranks form our rail (the ranks at our position in every group).
#pragma once
#include <algorithm>
#include <vector>

#include "coll/core/context.h"
#include "coll/core/reg_cache.h"
#include "coll/core/topology.h"
#include "common/errors.h"

namespace uccl {

struct Split {
  size_t level = 0;                      // the level that splits, or past the last: none (flat)
  std::vector<std::vector<int>> groups;  // the groups at that level, by first member, each in rank order
  size_t group = 0, pos = 0;             // ours, and our position in it
  bool flat = true;

  const std::vector<int>& mine() const { return groups[group]; }
  std::vector<int> rail() const {
    std::vector<int> r;
    for (const auto& g : groups) r.push_back(g[pos]);
    return r;
  }
};

// Levels that put all of `among` in one group, or each rank alone, are skipped; a level
// whose groups differ in size ends the search (flat: the rest is done among `among`).
inline Split split_among(const Topology& topo, size_t k, int rank, const std::vector<int>& among) {
  Split s;
  for (; k < topo.levels.size(); ++k) {
    std::vector<std::vector<int>> gs;
    std::vector<int> seen;
    for (int r : among) {
      const int g = topo.levels[k][size_t(r)];
      if (std::find(seen.begin(), seen.end(), g) != seen.end()) continue;
      seen.push_back(g);
      gs.push_back(topo.mates(k, r, among));
    }
    if (gs.size() == 1 || gs.size() == among.size()) continue;
    for (const auto& g : gs)
      if (g.size() != gs[0].size()) return s;
    s.level = k, s.groups = std::move(gs), s.flat = false;
    for (size_t i = 0; i < s.groups.size(); ++i) {
      auto at = std::find(s.groups[i].begin(), s.groups[i].end(), rank);
      if (at != s.groups[i].end()) s.group = i, s.pos = size_t(at - s.groups[i].begin());
    }
    return s;
  }
  return s;
}

inline std::vector<int> all_ranks(int world) {
  std::vector<int> r(static_cast<size_t>(world));
  for (int i = 0; i < world; ++i) r[size_t(i)] = i;
  return r;
}

// What every hierarchical call carries: the context, the topology, the registration
// cache for the sub-buffers its phases address, and its working memory.
struct Hierarchy {
  CollContext& c;
  const Topology& topo;
  RegCache& regs;
  Scratch scratch;

  LocalBuffer buffer(const char* p, uint64_t count) const { return LocalBuffer(regs, p, count * c.esize); }
  // Working memory [p, p + bytes) for a phase; a plan that would overrun the scratch is a bug
  // here, caught before any byte is written.
  char* carve(char* p, uint64_t bytes) const {
    if (p + bytes > scratch.data + scratch.bytes)
      raise(ErrorKind::Generic, "rank ", c.rank, ": hierarchical: working memory overrun (", bytes, " bytes at ",
            p - scratch.data, " of ", scratch.bytes, ")");
    return p;
  }
  // Avg divides once, by the whole world, where a result is final; the phases only add.
  ReduceOp phase_op() const { return c.op == ReduceOp::Avg ? ReduceOp::Sum : c.op; }
};

}  // namespace uccl
