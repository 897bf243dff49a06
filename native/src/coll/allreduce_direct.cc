#include "coll/algorithms.h"
#include "coll/fold_peers.h"
#include "common/stream_copy.h"

namespace uccl {

// Rank r owns block r: chunk by chunk it reads block r of every peer's input into
// a cache-sized scratch, folds them into a second scratch, writes the finished
// chunk from there into every peer's output, then streams it into its own.
// Every byte crosses once each way, reductions and write-outs work from cache,
// and only this rank ever touches block r anywhere, so in-place calls are safe.
// Channels take every channels-th chunk, each with its own pair of scratches.
void all_reduce_direct(CollContext& c, const LocalBuffer& in, const LocalBuffer& out, uint64_t count,
                       const Scratch& scratch) {
  const uint64_t es = c.esize, bytes = count * es;
  auto seg = even_parts(count, c.world);
  auto off = prefix_offsets(seg);
  for (size_t j = 0; j < seg.size(); ++j) seg[j] *= es, off[j] *= es;
  CallWindows win(c, in.at(0), bytes, out.at(0), bytes);
  win.open_all(block_grants(off, seg, true, true));
  const uint64_t base = off[size_t(c.rank)], mine = seg[size_t(c.rank)];
  for (int s = 1; s < c.world; ++s) win.expect(c.peer(s), mine, mine, "all_reduce");
  for_each_owned_chunk(c, mine, [&](OneSided& ops, uint64_t theirs, uint64_t acc, uint64_t o, uint64_t len) {
    fold_peers(c, win, ops, in.at(base + o), scratch, theirs, acc, o, len);
    for (int s = 1; s < c.world; ++s) {
      const Window& w = win.of(c.peer(s));
      ops.write(c.peer(s), scratch.key, acc, len, w.out_key, w.out_off + o);
    }
    copy_out(out.at(base + o), scratch.data + acc, len, bytes);
    ops.wait_all();
  });
  win.close();
}

}  // namespace uccl
