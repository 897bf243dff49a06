// What an algorithm needs for one call: the links, who we are, how big a
// chunk is, and the call's buffers registered with the transport.
#pragma once
#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "coll/core/dtype.h"
#include "coll/core/links.h"
#include "coll/core/reg_cache.h"
#include "coll/core/worker_pool.h"
#include "transport/endpoint.h"

namespace uccl {

// A call's buffer: where it is and the key that registers it (local access).
class LocalBuffer {
 public:
  LocalBuffer(RegCache& cache, const void* p, uint64_t bytes)
      : base_(static_cast<char*>(const_cast<void*>(p))), key_(cache.key(uint64_t(p), bytes)) {}
  char* at(uint64_t off) const { return base_ + off; }
  uint64_t key() const { return key_; }

 private:
  char* base_;
  uint64_t key_;
};

// Registered working memory of the communicator's (local access only).
struct Scratch {
  char* data;
  uint64_t key;
  uint64_t bytes = 0;  // its size, where the user carves it (hierarchical algorithms)
};

struct CollContext {
  Endpoint& ep;
  Links& links;
  int rank, world;
  uint64_t chunk;  // bytes per chunk, <= links.slot_bytes(), a multiple of the element size
  DataType dtype;
  ReduceOp op;
  size_t esize;
  int channels;       // threads working on disjoint parts of a large call (direct algorithms)
  WorkerPool* pool;   // runs them

  int peer(int offset) const { return ((rank + offset) % world + world) % world; }
  static uint64_t chunks(uint64_t bytes, uint64_t chunk) { return bytes == 0 ? 1 : (bytes + chunk - 1) / chunk; }
  uint64_t chunk_len(uint64_t bytes, uint64_t i) const {
    uint64_t off = i * chunk;
    return off >= bytes ? 0 : (bytes - off < chunk ? bytes - off : chunk);
  }
};

// Runs fn(channel) for each of the call's channels at once.
template <typename Fn>
void for_each_channel(CollContext& c, Fn&& fn) {
  c.pool->run(c.channels, std::function<void(int)>(std::forward<Fn>(fn)));
}

// Part k of n of [0, len), split on page boundaries: {offset, length}.
inline std::pair<uint64_t, uint64_t> part_of(uint64_t len, int k, int n) {
  constexpr uint64_t kPage = 4096;
  uint64_t pages = (len + kPage - 1) / kPage;
  uint64_t lo = pages * uint64_t(k) / uint64_t(n) * kPage, hi = pages * uint64_t(k + 1) / uint64_t(n) * kPage;
  lo = lo < len ? lo : len, hi = hi < len ? hi : len;
  return {lo, hi - lo};
}

// Element offsets of W nearly equal parts of `count` (the ring's segments).
inline std::vector<uint64_t> even_parts(uint64_t count, int world) {
  std::vector<uint64_t> counts(static_cast<size_t>(world), 0);
  for (int j = 0; j < world; ++j) counts[size_t(j)] = count / uint64_t(world) + (uint64_t(j) < count % uint64_t(world));
  return counts;
}

inline std::vector<uint64_t> prefix_offsets(const std::vector<uint64_t>& counts) {
  std::vector<uint64_t> off(counts.size(), 0);
  for (size_t j = 1; j < counts.size(); ++j) off[j] = off[j - 1] + counts[j - 1];
  return off;
}

}  // namespace uccl

namespace uccl {

constexpr int kNobody = -1;

// One pipelined step: sends `sbytes` at (skey, soff) to `to` while receiving
// `rbytes` from `from`, chunk by chunk, handing each received chunk to
// on_chunk(data, offset, len) before its slot is returned. Either side may be kNobody.
// Chunk i+1 is on its way before chunk i is waited for, so the link never idles
// for a round trip per chunk. on_chunk(i) still runs only once send i is done, so it may
// overwrite chunk i's source (recursive doubling folds into what it sends); it
// must not touch chunk i+1's.
template <typename OnChunk>
void exchange(CollContext& c, int to, uint64_t skey, uint64_t soff, uint64_t sbytes, int from, uint64_t rbytes,
              OnChunk&& on_chunk) {
  uint64_t ns = to == kNobody ? 0 : CollContext::chunks(sbytes, c.chunk);
  uint64_t nr = from == kNobody ? 0 : CollContext::chunks(rbytes, c.chunk);
  auto post = [&](uint64_t i) { return c.links.post(to, skey, soff + i * c.chunk, c.chunk_len(sbytes, i)); };
  Endpoint::Posted cur{}, next{};
  if (ns) cur = post(0);
  for (uint64_t i = 0; i < ns || i < nr; ++i) {
    if (i + 1 < ns) next = post(i + 1);
    if (i < ns) c.links.sent(cur);
    if (i < nr) {
      uint64_t len = c.chunk_len(rbytes, i);
      char* data = c.links.recv(from, len);
      on_chunk(data, i * c.chunk, len);
      c.links.release(from);
    }
    cur = next;
  }
}

}  // namespace uccl
