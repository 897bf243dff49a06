// The reduction step the direct algorithms share: chunk [o, o + len) of the block a
// rank owns, read from every peer's input window into a scratch and folded with the
// rank's own input into an accumulator (both cache-sized, in `scratch`).
#pragma once
#include <cstdint>

#include "coll/context.h"
#include "coll/one_sided.h"
#include "coll/reduce_kernels.h"
#include "coll/windows.h"

namespace uccl {

// `own`: our input at the chunk; `theirs`/`acc`: offsets in `scratch`. Avg is applied.
inline void fold_peers(CollContext& c, const CallWindows& win, OneSided& ops, const char* own,
                       const Scratch& scratch, uint64_t theirs, uint64_t acc, uint64_t o, uint64_t len) {
  for (int s = 1; s < c.world; ++s) {
    const Window& w = win.of(c.peer(s));
    ops.read(c.peer(s), scratch.key, theirs, len, w.in_key, w.in_off + o);
    ops.wait_all();
    reduce(scratch.data + acc, s == 1 ? own : scratch.data + acc, scratch.data + theirs, len / c.esize, c.dtype,
           c.op);
  }
  if (c.op == ReduceOp::Avg) scale_by_inverse(scratch.data + acc, len / c.esize, c.dtype, c.world);
}

// Runs fn(ops, theirs, acc, o, len) for every chunk [o, o + len) of a rank's
// `bytes`-long block: channel k takes every channels-th chunk, with its own two
// chunk-sized scratches (offsets theirs and acc).
template <typename Fn>
void for_each_owned_chunk(CollContext& c, uint64_t bytes, Fn&& fn) {
  for_each_channel(c, [&](int ch) {
    const uint64_t theirs = uint64_t(ch) * 2 * c.chunk, acc = theirs + c.chunk;
    OneSided ops(c);
    for (uint64_t o = uint64_t(ch) * c.chunk; o < bytes; o += uint64_t(c.channels) * c.chunk)
      fn(ops, theirs, acc, o, bytes - o < c.chunk ? bytes - o : c.chunk);
  });
}

}  // namespace uccl
