#include <cstring>

#include "coll/algorithms/algorithms.h"

namespace uccl {

namespace {
// Our own block is copied a slice at a time between chunks of the first round,
// on our core while the peer's core writes into our inbox, rather than up front.
struct SlicedCopy {
  char* dst;
  const char* src;
  uint64_t bytes, slice, done = 0;
  void step() {
    uint64_t n = bytes - done < slice ? bytes - done : slice;
    if (n) std::memmove(dst + done, src + done, n);
    done += n;
  }
  void finish() {
    while (done < bytes) step();
  }
};
}  // namespace

// In place with more than two ranks, a block arriving in round s would overwrite one
// still to be sent in a later round: the input is copied aside first (`staging`).
void all_to_all_pairwise(CollContext& c, const LocalBuffer& in, uint64_t in_bytes, const LocalBuffer& out,
                         const std::vector<uint64_t>& send_counts, const std::vector<uint64_t>& send_displs,
                         const std::vector<uint64_t>& recv_counts, const std::vector<uint64_t>& recv_displs,
                         const Scratch& staging) {
  const size_t es = c.esize;
  const size_t me = size_t(c.rank);
  const char* src = in.at(0);
  uint64_t src_key = in.key();
  if (staging.data) {
    std::memcpy(staging.data, src, in_bytes);
    src = staging.data, src_key = staging.key;
  }
  SlicedCopy own{out.at(recv_displs[me] * es), src + send_displs[me] * es, send_counts[me] * es, c.chunk};
  if (own.dst == own.src) own.bytes = 0;  // in place: already there
  for (int s = 1; s < c.world; ++s) {
    size_t to = size_t(c.peer(s)), from = size_t(c.peer(-s));
    exchange(c, int(to), src_key, send_displs[to] * es, send_counts[to] * es, int(from), recv_counts[from] * es,
             [&](const char* data, uint64_t o, uint64_t len) {
               std::memcpy(out.at(recv_displs[from] * es + o), data, len);
               if (s == 1) own.step();
             });
  }
  own.finish();
}

}  // namespace uccl
