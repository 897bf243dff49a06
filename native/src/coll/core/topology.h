// Where the ranks are: for each level, innermost first (host, then leaf/rack, ...),
// the group every rank belongs to. Filled by uccl/collectives/topology.py (declared
// UCCL_TOPOLOGY and which ranks the channels found on one host), the same on every rank.
#pragma once
#include <algorithm>
#include <string>
#include <vector>

namespace uccl {

struct Topology {
  std::vector<std::vector<int>> levels;  // levels[k][rank]: the rank's group at level k

  // The ranks of `among` in the same level-k group as `rank`, in the order of `among`.
  std::vector<int> mates(size_t k, int rank, const std::vector<int>& among) const {
    std::vector<int> out;
    for (int r : among)
      if (levels[k][size_t(r)] == levels[k][size_t(rank)]) out.push_back(r);
    return out;
  }
  // The largest number of level-(k-1) groups in one level-k group (ranks for k = 0); 0
  // when there is no level k. groups_in(0): ranks per host; groups_in(1): hosts per leaf.
  int groups_in(size_t k) const {
    if (k >= levels.size()) return 0;
    std::vector<std::vector<int>> members;  // level-k group -> its distinct level-(k-1) groups
    for (size_t r = 0; r < levels[k].size(); ++r) {
      const int g = levels[k][r], below = k ? levels[k - 1][r] : int(r);
      if (g < 0) return 0;
      if (size_t(g) >= members.size()) members.resize(size_t(g) + 1);
      auto& m = members[size_t(g)];
      if (std::find(m.begin(), m.end(), below) == m.end()) m.push_back(below);
    }
    size_t most = 0;
    for (const auto& m : members) most = m.size() > most ? m.size() : most;
    return int(most);
  }
  // Whether some level splits the ranks into several groups one of which has more than one
  // rank: then a hierarchical algorithm has a slow level to cross once.
  bool structured() const {
    for (const auto& level : levels) {
      std::vector<int> sizes;
      for (int g : level) {
        if (g < 0) return false;
        if (size_t(g) >= sizes.size()) sizes.resize(size_t(g) + 1, 0);
        ++sizes[size_t(g)];
      }
      int groups = 0, biggest = 0;
      for (int n : sizes) groups += n > 0, biggest = n > biggest ? n : biggest;
      if (groups > 1 && biggest > 1) return true;
    }
    return false;
  }
};

}  // namespace uccl
