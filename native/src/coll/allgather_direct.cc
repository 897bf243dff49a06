#include <cstring>

#include "coll/algorithms.h"
#include "coll/one_sided.h"
#include "coll/windows.h"

namespace uccl {

// Each rank writes its block straight into its place in every peer's output:
// one copy per byte, no staging. Peers only ever write block p of ours (p != r),
// so `in` may be our own block of `out` (in place).
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
  OneSided ops(c);
  for (int s = 1; s < c.world; ++s) {
    const int p = c.peer(s);
    win.expect(p, 0, len[me], "all_gather");
    ops.write(p, in.key(), 0, len[me], win.of(p).out_key, win.of(p).out_off);
  }
  if (in.at(0) != out.at(off[me])) std::memmove(out.at(off[me]), in.at(0), len[me]);
  ops.wait_all();
  win.close();
}

}  // namespace uccl
