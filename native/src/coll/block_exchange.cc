#include "coll/block_exchange.h"

#include <cstring>

#include "coll/one_sided.h"
#include "coll/windows.h"

namespace uccl {

namespace {
// Below this a second copy (out of the slot) costs less than the window's round trip.
constexpr uint64_t kEagerMax = 32 << 10;
}  // namespace

void exchange_blocks(CollContext& c, uint64_t src_key, const LocalBuffer& out, uint64_t out_bytes,
                     const BlockPlan& plan, const char* what) {
  const uint64_t eager_max = kEagerMax < c.chunk ? kEagerMax : c.chunk;
  std::vector<int> senders, receivers, big_in, big_out;
  std::vector<Window> grants(size_t(c.world));
  for (int s = 1; s < c.world; ++s) {  // rank + s first: peers are spread over one another's turns
    const int p = c.peer(s);
    if (plan.recvs[size_t(p)]) {
      senders.push_back(p);
      grants[size_t(p)].out_off = plan.recv_off[size_t(p)], grants[size_t(p)].out_len = plan.recv_len[size_t(p)];
      if (plan.recv_len[size_t(p)] > eager_max) big_in.push_back(p);
    }
    if (plan.sends[size_t(p)]) receivers.push_back(p);
  }
  CallWindows win(c, nullptr, 0, out.at(0), big_in.empty() ? 0 : out_bytes);
  win.grant(senders, grants);
  for (int p : receivers)
    if (plan.send_len[size_t(p)] <= eager_max) c.links.send(p, src_key, plan.send_off[size_t(p)], plan.send_len[size_t(p)]);
  win.learn(receivers);
  OneSided ops(c);
  for (int p : receivers) {
    const uint64_t len = plan.send_len[size_t(p)];
    win.expect(p, 0, len, what);
    if (len <= eager_max) continue;
    big_out.push_back(p);
    ops.write(p, src_key, plan.send_off[size_t(p)], len, win.of(p).out_key, win.of(p).out_off);
  }
  for (int p : senders) {
    const uint64_t len = plan.recv_len[size_t(p)];
    if (len > eager_max) continue;
    std::memcpy(out.at(plan.recv_off[size_t(p)]), c.links.recv(p, len), len);
    c.links.release(p);
  }
  ops.wait_all();
  win.close(big_out, big_in);
}

}  // namespace uccl
