// Copies that bypass the cache on the destination side (non-temporal stores) for
// large outputs that will not be read again soon: a normal store first reads the
// line it writes into the cache, so streaming saves a third of a copy's memory
// traffic, which is what bounds large collectives on shared memory.
#pragma once
#include <cstddef>

namespace uccl {

// Like memcpy (no overlap).
void stream_copy(void* dst, const void* src, size_t bytes);

// stream_copy without the closing fence, for many small copies in a row (the
// net channel places each packet's payload this way): the caller issues
// stream_fence() once before anyone may look at the bytes.
void stream_store(void* dst, const void* src, size_t bytes);
void stream_fence();

// A call whose output is larger than this will not find it in cache afterwards.
constexpr size_t kStreamOutputMin = 1 << 20;

// stream_copy when the call's whole output is that large, else memcpy.
void copy_out(void* dst, const void* src, size_t bytes, size_t call_output_bytes);
// copy_out, but the ranges may overlap (a rank's own block in place): memmove then.
void move_out(void* dst, const void* src, size_t bytes, size_t call_output_bytes);

}  // namespace uccl
