#include <cstring>

#include "coll/algorithms.h"
#include "coll/one_sided.h"
#include "coll/windows.h"

namespace uccl {

namespace {
// Blocks up to this size travel eagerly through a link slot (one message); larger
// ones are written straight into the receiver's output through its window, which
// costs a round trip but no second copy. Every receiver grants every sender a
// window naming the length it expects, so a sender that disagrees (and would pick
// the other way) finds out instead of waiting.
constexpr uint64_t kEagerMax = 32 << 10;
}  // namespace

// Each rank writes every peer's block straight into that peer's output, at the
// place the peer named in its window (so per-rank counts and displacements need
// not be known elsewhere). A rank whose input overlaps its output (in place)
// first copies its input aside: peers may write into it as soon as it is opened.
void all_to_all_direct(CollContext& c, const LocalBuffer& in, uint64_t in_bytes, const LocalBuffer& out,
                       uint64_t out_bytes, const std::vector<uint64_t>& send_counts,
                       const std::vector<uint64_t>& send_displs, const std::vector<uint64_t>& recv_counts,
                       const std::vector<uint64_t>& recv_displs, const Scratch& staging) {
  const uint64_t es = c.esize, eager_max = kEagerMax < c.chunk ? kEagerMax : c.chunk;
  const size_t me = size_t(c.rank);
  if (recv_counts[me] != send_counts[me])
    c.links.abort(format_msg("rank ", c.rank, " sends itself ", send_counts[me], " elements but expects ",
                             recv_counts[me]));
  const char *lo_in = in.at(0), *lo_out = out.at(0);
  const bool overlap = in_bytes && out_bytes && lo_in < lo_out + out_bytes && lo_out < lo_in + in_bytes;
  const char* src = lo_in;
  uint64_t src_key = in.key();
  if (overlap) {
    std::memcpy(staging.data, lo_in, in_bytes);
    src = staging.data, src_key = staging.key;
  }
  auto send_len = [&](int p) { return send_counts[size_t(p)] * es; };
  auto recv_len = [&](int p) { return recv_counts[size_t(p)] * es; };

  std::vector<Window> grants(size_t(c.world));
  std::vector<int> big_in, small_in, big_out;
  for (int s = 1; s < c.world; ++s) {
    const int p = c.peer(s);
    grants[size_t(p)].out_off = recv_displs[size_t(p)] * es, grants[size_t(p)].out_len = recv_len(p);
    (recv_len(p) > eager_max ? big_in : small_in).push_back(p);
  }
  CallWindows win(c, nullptr, 0, out.at(0), big_in.empty() ? 0 : out_bytes);
  win.grant(win.others(), grants);
  for (int s = 1; s < c.world; ++s) {
    const int p = c.peer(s);
    if (send_len(p) <= eager_max) c.links.send(p, src_key, send_displs[size_t(p)] * es, send_len(p));
  }
  win.learn(win.others());
  OneSided ops(c);
  for (int s = 1; s < c.world; ++s) {
    const int p = c.peer(s);
    win.expect(p, 0, send_len(p), "all_to_all");
    if (send_len(p) <= eager_max) continue;
    big_out.push_back(p);
    ops.write(p, src_key, send_displs[size_t(p)] * es, send_len(p), win.of(p).out_key, win.of(p).out_off);
  }
  std::memmove(out.at(recv_displs[me] * es), src + send_displs[me] * es, recv_len(c.rank));
  for (int p : small_in) {
    std::memcpy(out.at(recv_displs[size_t(p)] * es), c.links.recv(p, recv_len(p)), recv_len(p));
    c.links.release(p);
  }
  ops.wait_all();
  win.close(big_out, big_in);
}

}  // namespace uccl
