#include "tools/pingpong.h"

#include "common/clock.h"

namespace uccl {

double pingpong_one_way_us(Endpoint& ep, int peer, bool initiator, uint64_t lkey, uint64_t rkey, uint64_t size,
                           int iters, int warmup) {
  const double timeout = ep.config().timeout_s;
  uint64_t start = 0;
  for (int i = 0; i < warmup + iters; ++i) {
    if (i == warmup) start = now_ns();
    if (initiator) {
      ep.write(peer, lkey, 0, size, rkey, 0, true, uint32_t(i));
      ep.wait_remote_write(peer, timeout);
    } else {
      ep.wait_remote_write(peer, timeout);
      ep.write(peer, lkey, 0, size, rkey, 0, true, uint32_t(i));
    }
  }
  return double(now_ns() - start) / 1e3 / iters / 2;
}

}  // namespace uccl
