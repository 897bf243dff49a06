#include "coll/algorithms/algorithms.h"
#include "coll/algorithms/fold_peers.h"
#include "common/stream_copy.h"

namespace uccl {

// Rank r reads block r of every peer's input, a cache-sized chunk at a time, folds
// them in a cache-resident accumulator and streams the result to its output.
// Nothing is written remotely, and no peer reads block r of this rank's input, so
// `out` may be that block (in place). Channels take every channels-th chunk.
void reduce_scatter_direct(CollContext& c, const LocalBuffer& in, const LocalBuffer& out,
                           const std::vector<uint64_t>& counts, const Scratch& scratch) {
  const uint64_t es = c.esize;
  auto off = prefix_offsets(counts);
  std::vector<uint64_t> len_b(counts.size());
  uint64_t total = 0;
  for (size_t j = 0; j < counts.size(); ++j) len_b[j] = counts[j] * es, off[j] *= es, total += len_b[j];
  CallWindows win(c, in.at(0), total, nullptr, 0);
  win.open_all(block_grants(off, len_b, true, false));
  const uint64_t base = off[size_t(c.rank)], mine = len_b[size_t(c.rank)];
  for (int s = 1; s < c.world; ++s) win.expect(c.peer(s), mine, 0, "reduce_scatter");
  for_each_owned_chunk(c, mine, [&](OneSided& ops, const OwnedChunk& k) {
    fold_peers(c, win, ops, in.at(base + k.o), scratch, k.theirs, scratch.data + k.acc, k.o, k.len);
    copy_out(out.at(k.o), scratch.data + k.acc, k.len, mine);
  });
  win.close();
}

}  // namespace uccl
