#include <cstring>

#include "coll/algorithms/algorithms.h"
#include "coll/core/one_sided.h"
#include "common/stream_copy.h"
#include "coll/core/windows.h"

namespace uccl {

// Each rank writes its block straight into its place in every peer's output:
// one copy per byte, no staging. Peers only ever write block p of ours (p != r),
// so `in` may be our own block of `out` (in place). Channel k copies part k of
// the block to every peer and to our own output.
void all_gather_direct(CollContext& c, const LocalBuffer& in, const LocalBuffer& out,
                       const std::vector<uint64_t>& counts, const std::vector<uint64_t>& displs) {
  const uint64_t es = c.esize;
  const size_t me = size_t(c.rank);
  std::vector<uint64_t> off(counts.size()), len(counts.size());
  uint64_t extent = 0;
  for (size_t j = 0; j < counts.size(); ++j) {
    off[j] = displs[j] * es, len[j] = counts[j] * es;
    extent = off[j] + len[j] > extent ? off[j] + len[j] : extent;
  }
  CallWindows win(c, nullptr, 0, out.at(0), extent);
  win.open_all(block_grants(off, len, false, true));
  for (int s = 1; s < c.world; ++s) win.expect(c.peer(s), 0, len[me], "all_gather");
  const char *own = in.at(0), *dst = out.at(off[me]);
  const bool disjoint = own + len[me] <= dst || dst + len[me] <= own;
  if (!disjoint && own != dst) std::memmove(out.at(off[me]), own, len[me]);  // overlapping: one thread, memmove
  for_each_channel(c, [&](int ch) {
    auto [o, n] = part_of(len[me], ch, c.channels);
    OneSided ops(c);
    for (int s = 1; s < c.world; ++s) {
      const Window& w = win.of(c.peer(s));
      ops.write(c.peer(s), in.key(), o, n, w.out_key, w.out_off + o);
    }
    if (disjoint) copy_out(out.at(off[me] + o), own + o, n, extent);
    ops.wait_all();
  });
  win.close();
}

}  // namespace uccl
