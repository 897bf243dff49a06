#include <cstring>

#include "coll/algorithms/algorithms.h"
#include "coll/algorithms/block_exchange.h"
#include "common/stream_copy.h"

namespace uccl {

// Every pair exchanges one block (block_exchange.h). A rank whose input overlaps
// its output (in place) first copies its input aside: peers may write into its
// output as soon as it grants them windows.
void all_to_all_direct(CollContext& c, const LocalBuffer& in, uint64_t in_bytes, const LocalBuffer& out,
                       uint64_t out_bytes, const std::vector<uint64_t>& send_counts,
                       const std::vector<uint64_t>& send_displs, const std::vector<uint64_t>& recv_counts,
                       const std::vector<uint64_t>& recv_displs, const Scratch& staging) {
  const uint64_t es = c.esize;
  const size_t me = size_t(c.rank);
  if (recv_counts[me] != send_counts[me])
    c.links.abort(format_msg("rank ", c.rank, " sends itself ", send_counts[me], " elements but expects ",
                             recv_counts[me]));
  const char *src = in.at(0), *dst = out.at(0);
  uint64_t src_key = in.key();
  if (in_bytes && out_bytes && src < dst + out_bytes && dst < src + in_bytes) {
    copy_out(staging.data, src, in_bytes, in_bytes);
    src = staging.data, src_key = staging.key;
  }
  BlockPlan plan(c.world);
  for (int p = 0; p < c.world; ++p) {
    if (p == c.rank) continue;
    plan.send(p, send_displs[size_t(p)] * es, send_counts[size_t(p)] * es);
    plan.recv(p, recv_displs[size_t(p)] * es, recv_counts[size_t(p)] * es);
  }
  exchange_blocks(c, src_key, out, out_bytes, plan, "all_to_all", [&] {
    copy_out(out.at(recv_displs[me] * es), src + send_displs[me] * es, recv_counts[me] * es, out_bytes);
  });
}

}  // namespace uccl
