// The reduction step the direct algorithms share: chunk [o, o + len) of the block a
// rank owns, read from every peer's input window into a scratch and folded with the
// rank's own input into an accumulator (both cache-sized, in `scratch`).
#pragma once
#include <cstdint>
#include <utility>

#include "coll/core/context.h"
#include "coll/core/one_sided.h"
#include "coll/core/reduce_kernels.h"
#include "coll/core/windows.h"

namespace uccl {

// `own`: our input at the chunk; `theirs`: an offset in `scratch`; `acc`: where the
// sum goes (cache-sized). Avg is applied.
inline void fold_peers(CollContext& c, const CallWindows& win, OneSided& ops, const char* own,
                       const Scratch& scratch, uint64_t theirs, char* acc, uint64_t o, uint64_t len) {
  for (int s = 1; s < c.world; ++s) {
    const Window& w = win.of(c.peer(s));
    ops.read(c.peer(s), scratch.key, theirs, len, w.in_key, w.in_off + o);
    ops.wait_all();
    reduce(acc, s == 1 ? own : acc, scratch.data + theirs, len / c.esize, c.dtype, c.op);
  }
  if (c.op == ReduceOp::Avg) scale_by_inverse(acc, len / c.esize, c.dtype, c.world);
}

// One chunk [o, o + len) of a rank's block: the n-th of channel ch, with that
// channel's two chunk-sized scratches (offsets theirs and acc).
struct OwnedChunk {
  int ch;
  uint64_t n, theirs, acc, o, len;
};

// Runs fn(ops, chunk) for every chunk of a rank's `bytes`-long block: channel k takes
// every channels-th chunk; then last(ops, ch) once per channel.
template <typename Fn, typename Last>
void for_each_owned_chunk(CollContext& c, uint64_t bytes, Fn&& fn, Last&& last) {
  for_each_channel(c, [&](int ch) {
    const uint64_t theirs = uint64_t(ch) * 2 * c.chunk, acc = theirs + c.chunk;
    OneSided ops(c);
    uint64_t n = 0;
    for (uint64_t o = uint64_t(ch) * c.chunk; o < bytes; o += uint64_t(c.channels) * c.chunk, ++n)
      fn(ops, OwnedChunk{ch, n, theirs, acc, o, bytes - o < c.chunk ? bytes - o : c.chunk});
    last(ops, ch);
  });
}

template <typename Fn>
void for_each_owned_chunk(CollContext& c, uint64_t bytes, Fn&& fn) {
  for_each_owned_chunk(c, bytes, std::forward<Fn>(fn), [](OneSided&, int) {});
}

}  // namespace uccl
