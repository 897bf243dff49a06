#include "coll/core/tuner.h"

#include <algorithm>
#include <cstring>

#include "common/errors.h"

namespace uccl {

namespace {

// The algorithms each collective has.
const struct {
  const char* collective;
  const char* algos[5];
} kAlgorithms[] = {{"all_reduce", {"ring", "recursive_doubling", "direct", "hierarchical", "flat"}},
                   {"all_gather", {"ring", "direct", "hierarchical", "flat"}},
                   {"reduce_scatter", {"ring", "direct", "hierarchical", "flat"}},
                   {"all_to_all", {"pairwise", "direct", "aggregated"}},
                   {"broadcast", {"chain", "direct", "hierarchical", "flat"}},
                   {"reduce", {"chain", "hierarchical", "flat"}}};

// How many of the shape keys a rule names (more: tried first).
int specificity(const TuneRule& r) { return (r.ranks_per_host > 0) + (r.hosts_per_leaf > 0) + !r.link.empty(); }

}  // namespace

Tuner::Tuner(std::vector<TuneRule> rules, std::string forced_algo, uint64_t forced_chunk, int forced_channels,
             uint64_t default_chunk)
    : rules_(std::move(rules)), forced_algo_(std::move(forced_algo)), forced_chunk_(forced_chunk),
      forced_channels_(forced_channels), default_chunk_(default_chunk) {
  // Stable: the rules of one case keep their order of size.
  std::stable_sort(rules_.begin(), rules_.end(),
                   [](const TuneRule& a, const TuneRule& b) { return specificity(a) > specificity(b); });
  if (forced_algo_.empty() || forced_algo_ == "auto") return;
  const auto names = algorithms();
  if (std::find(names.begin(), names.end(), forced_algo_) != names.end()) return;
  std::string valid = "auto";
  for (const auto& n : names) valid += ", " + n;
  raise(ErrorKind::Argument, "UCCL_ALGO=", forced_algo_, ": must be one of ", valid);
}

std::vector<std::string> Tuner::algorithms() {
  std::vector<std::string> names;
  for (const auto& row : kAlgorithms)
    for (const char* a : row.algos)
      if (a && std::find(names.begin(), names.end(), a) == names.end()) names.push_back(a);
  return names;
}

bool Tuner::implements(const char* collective, const std::string& algo) {
  for (const auto& row : kAlgorithms) {
    if (std::strcmp(row.collective, collective) != 0) continue;
    for (const char* a : row.algos)
      if (a && algo == a) return true;
  }
  return false;
}

Tuner::Choice Tuner::choose(const char* collective, int world, const std::string& transport, uint64_t bytes,
                            const char* fallback, const TuneShape& shape) const {
  Choice c{fallback, default_chunk_, 1};
  const bool layered = shape.topology == "layered" && forced_algo_ != "flat" &&
                       (implements(collective, "hierarchical") || implements(collective, "aggregated"));
  // Rules are ordered by max_bytes within a collective: the first that fits wins.
  auto apply_rules = [&](bool shaped) {
    for (const auto& r : rules_) {
      if (r.collective != collective || (r.world != 0 && r.world != world) || bytes > r.max_bytes) continue;
      if (!r.transport.empty() && r.transport != transport) continue;
      if ((r.ranks_per_host > 0 && r.ranks_per_host != shape.ranks_per_host) ||
          (r.hosts_per_leaf > 0 && r.hosts_per_leaf != shape.hosts_per_leaf) ||
          (!r.link.empty() && r.link != shape.link))
        continue;
      if (shaped ? r.topology != "layered" : !r.topology.empty() && r.topology != (layered ? "layered" : "flat"))
        continue;
      c.algo = r.algo.c_str();
      if (r.chunk_bytes) c.chunk_bytes = r.chunk_bytes;
      if (r.channels > 0) c.channels = r.channels;
      return true;
    }
    return false;
  };
  bool decided = layered && apply_rules(true);
  if (!decided && layered && bytes >= kLayeredMinBytes && implements(collective, "hierarchical"))
    c.algo = "hierarchical", decided = true;
  if (!decided && layered && bytes <= kAggregatedMaxBytes && implements(collective, "aggregated"))
    c.algo = "aggregated", decided = true;
  if (!decided) apply_rules(false);
  if (forced(collective)) c.algo = forced_algo_.c_str();
  if (forced_chunk_) c.chunk_bytes = forced_chunk_;
  if (forced_channels_ > 0) c.channels = forced_channels_;
  if (c.chunk_bytes > default_chunk_) c.chunk_bytes = default_chunk_;  // never beyond a slot
  return c;
}

}  // namespace uccl
