#include "coll/algorithms/block_exchange.h"

#include <cstring>

#include "coll/core/one_sided.h"
#include "coll/core/windows.h"

namespace uccl {

namespace {
// Below this a second copy (out of the slot) costs less than the window's round trip.
constexpr uint64_t kEagerMax = 32 << 10;
}  // namespace

void exchange_blocks(CollContext& c, uint64_t src_key, const LocalBuffer& out, uint64_t out_bytes,
                     const BlockPlan& plan, const char* what, const std::function<void()>& own_block) {
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
  if (own_block) own_block();
  win.learn(receivers);
  for (int p : receivers) {
    win.expect(p, 0, plan.send_len[size_t(p)], what);
    if (plan.send_len[size_t(p)] > eager_max) big_out.push_back(p);
  }
  // Large blocks: channel k writes part k of each; small ones are taken afterwards.
  OneSided ops(c);
  auto write_parts = [&](int ch) {
    OneSided mine(c);
    OneSided& use = ch == 0 ? ops : mine;
    for (int p : big_out) {
      auto [o, n] = part_of(plan.send_len[size_t(p)], ch, c.channels);
      use.write(p, src_key, plan.send_off[size_t(p)] + o, n, win.of(p).out_key, win.of(p).out_off + o);
    }
    if (ch != 0) mine.wait_all();  // channel 0's writes are waited for below, after the eager blocks
  };
  if (!big_out.empty()) for_each_channel(c, write_parts);
  win.writes_posted(big_out);  // our peers need not wait for our acks to learn we are done
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
