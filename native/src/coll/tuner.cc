#include "coll/tuner.h"

namespace uccl {

Tuner::Choice Tuner::choose(const char* collective, int world, uint64_t bytes, const char* fallback) const {
  Choice c{fallback, default_chunk_};
  // Rules are ordered by max_bytes within a collective: the first that fits wins.
  for (const auto& r : rules_) {
    if (r.collective != collective || (r.world != 0 && r.world != world) || bytes > r.max_bytes) continue;
    c.algo = r.algo.c_str();
    if (r.chunk_bytes) c.chunk_bytes = r.chunk_bytes;
    break;
  }
  if (!forced_algo_.empty() && forced_algo_ != "auto") c.algo = forced_algo_.c_str();
  if (forced_chunk_) c.chunk_bytes = forced_chunk_;
  if (c.chunk_bytes > default_chunk_) c.chunk_bytes = default_chunk_;  // never beyond a slot
  return c;
}

}  // namespace uccl
