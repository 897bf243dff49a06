#include <vector>

#include "coll/algorithms/algorithms.h"
#include "coll/core/one_sided.h"
#include "coll/core/windows.h"

namespace uccl {

// Every rank reads the root's buffer straight into its own (channel k: part k):
// one copy per byte and no chain. The root returns once every rank says it has read.
void broadcast_direct(CollContext& c, const LocalBuffer& buf, uint64_t count, int root) {
  const uint64_t bytes = count * c.esize;
  if (c.rank == root) {
    CallWindows win(c, buf.at(0), bytes, nullptr, 0);
    win.grant(win.others(), block_grants(std::vector<uint64_t>(size_t(c.world), 0),
                                         std::vector<uint64_t>(size_t(c.world), bytes), true, false));
    win.close();
    return;
  }
  CallWindows win(c, nullptr, 0, nullptr, 0);
  win.learn({root});
  win.expect(root, bytes, 0, "broadcast");
  for_each_channel(c, [&](int ch) {
    auto [o, n] = part_of(bytes, ch, c.channels);
    OneSided ops(c);
    ops.read(root, buf.key(), o, n, win.of(root).in_key, win.of(root).in_off + o);
    ops.wait_all();
  });
  win.close();
}

}  // namespace uccl
