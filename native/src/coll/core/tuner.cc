#include "coll/core/tuner.h"

#include <cstring>

namespace uccl {

bool Tuner::implements(const char* collective, const std::string& algo) {
  static const struct {
    const char* collective;
    const char* algos[4];
  } table[] = {{"all_reduce", {"ring", "recursive_doubling", "direct"}},
               {"all_gather", {"ring", "direct"}},
               {"reduce_scatter", {"ring", "direct"}},
               {"all_to_all", {"pairwise", "direct"}},
               {"broadcast", {"chain", "direct"}}};
  for (const auto& row : table) {
    if (std::strcmp(row.collective, collective) != 0) continue;
    for (const char* a : row.algos)
      if (a && algo == a) return true;
  }
  return false;
}

Tuner::Choice Tuner::choose(const char* collective, int world, const std::string& transport, uint64_t bytes,
                            const char* fallback) const {
  Choice c{fallback, default_chunk_, 1};
  // Rules are ordered by max_bytes within a collective: the first that fits wins.
  for (const auto& r : rules_) {
    if (r.collective != collective || (r.world != 0 && r.world != world) || bytes > r.max_bytes) continue;
    if (!r.transport.empty() && r.transport != transport) continue;
    c.algo = r.algo.c_str();
    if (r.chunk_bytes) c.chunk_bytes = r.chunk_bytes;
    if (r.channels > 0) c.channels = r.channels;
    break;
  }
  if (forced(collective)) c.algo = forced_algo_.c_str();
  if (forced_chunk_) c.chunk_bytes = forced_chunk_;
  if (forced_channels_ > 0) c.channels = forced_channels_;
  if (c.chunk_bytes > default_chunk_) c.chunk_bytes = default_chunk_;  // never beyond a slot
  return c;
}

}  // namespace uccl
