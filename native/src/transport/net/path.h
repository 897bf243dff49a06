// One path of a flow: a UDP source port (ECMP route), its congestion control,
// its RTT estimate and pacing state; plus the power-of-two-choices picker that
// sprays packets over the paths of a flow.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "transport/net/cc/cc.h"
#include "transport/net/rtt.h"

namespace uccl::net {

struct PathStats {  // written by the engine, read by stats()
  std::atomic<uint64_t> packets{0}, bytes{0}, retransmits{0}, losses{0}, timeouts{0};
  std::atomic<uint64_t> srtt_ns{0}, cwnd{0}, rate_bps{0}, inflight{0};
};

struct Path {
  std::unique_ptr<CongestionControl> cc;
  double inflight = 0;        // wire bytes sent on this path, not yet acked or declared lost
  uint64_t srtt_ns = 0, rttvar_ns = 0;
  uint64_t next_tx_ns = 0;    // pacing: earliest next transmission
  PathStats* stats = nullptr;

  void rtt_sample(uint64_t rtt) { rtt_update(rtt, &srtt_ns, &rttvar_ns); }
  double pace_rate() const { return cc->rate(srtt_ns); }
  // Paced paths send when their time comes; the rest when the window has room,
  // and room for a train of `want` bytes (up to half the window) if asked: the
  // kernel's cost is per train, and a window spread over many paths otherwise
  // goes out in the few packets each ack frees per path.
  bool eligible(uint64_t now, double want) const {
    if (pace_rate() > 0) return now >= next_tx_ns;
    const double w = cc->window();
    return inflight < w && w - inflight >= std::min(want, w / 2);
  }
  double room() const { return cc->window() - inflight; }
};

// Picks a path for the next burst: two random candidates, the one with more
// window room (lower RTT when the rooms are close); a full scan only when
// neither may send. `want`: see Path::eligible. Returns -1 when no path may send now.
class PathPicker {
 public:
  explicit PathPicker(uint64_t seed) : s_(seed | 1) {}
  int pick(const std::vector<Path>& paths, uint64_t now, double mss, double want) {
    const int n = int(paths.size());
    if (n == 1) return paths[0].eligible(now, want) ? 0 : -1;
    int a = int(next() % uint64_t(n));
    int b = int(next() % uint64_t(n - 1));
    if (b >= a) ++b;
    bool ea = paths[size_t(a)].eligible(now, want), eb = paths[size_t(b)].eligible(now, want);
    if (ea && eb) {
      const Path &pa = paths[size_t(a)], &pb = paths[size_t(b)];
      double ra = pa.room(), rb = pb.room();
      if (ra - rb > mss) return a;
      if (rb - ra > mss) return b;
      return pa.srtt_ns <= pb.srtt_ns ? a : b;
    }
    if (ea) return a;
    if (eb) return b;
    int start = int(next() % uint64_t(n));
    for (int k = 0; k < n; ++k) {
      int p = (start + k) % n;
      if (paths[size_t(p)].eligible(now, want)) return p;
    }
    return -1;
  }
  uint64_t next() {  // xorshift64*
    s_ ^= s_ >> 12;
    s_ ^= s_ << 25;
    s_ ^= s_ >> 27;
    return s_ * 0x2545f4914f6cdd1dull;
  }

 private:
  uint64_t s_;
};

}  // namespace uccl::net
