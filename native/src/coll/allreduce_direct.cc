#include "coll/algorithms.h"
#include "coll/one_sided.h"
#include "coll/reduce_kernels.h"
#include "coll/windows.h"

namespace uccl {

// Rank r owns block r: chunk by chunk it reads block r of every peer's input into
// a cache-sized scratch, folds it into its output, then writes the finished chunk
// into every peer's output. Every byte crosses once each way, the chunk stays in
// cache between reduction and write-out, and only this rank ever touches block r
// anywhere, so in-place calls are safe.
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
  OneSided ops(c);
  for (uint64_t o = 0; o < mine; o += c.chunk) {
    const uint64_t len = mine - o < c.chunk ? mine - o : c.chunk;
    for (int s = 1; s < c.world; ++s) {
      const Window& w = win.of(c.peer(s));
      ops.read(c.peer(s), scratch.key, 0, len, w.in_key, w.in_off + o);
      ops.wait_all();
      reduce(out.at(base + o), s == 1 ? in.at(base + o) : out.at(base + o), scratch.data, len / es, c.dtype, c.op);
    }
    if (c.op == ReduceOp::Avg) scale_by_inverse(out.at(base + o), len / es, c.dtype, c.world);
    for (int s = 1; s < c.world; ++s) {
      const Window& w = win.of(c.peer(s));
      ops.write(c.peer(s), out.key(), base + o, len, w.out_key, w.out_off + o);
    }
    ops.wait_all();
  }
  win.close();
}

}  // namespace uccl
