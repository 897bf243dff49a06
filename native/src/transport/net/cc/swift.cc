#include "transport/net/cc/swift.h"

#include <algorithm>
#include <cmath>

namespace uccl::net {

namespace {
constexpr double kAdditive = 1.0;     // packets per RTT below target
constexpr double kBeta = 0.8;         // multiplicative decrease per unit of relative excess delay
constexpr double kMaxMdf = 0.5;       // never cut more than half at once
// Target = CcParams::target_ns (UCCL_SWIFT_TARGET_US, 1.5 ms by default) + flow
// scaling. It must cover a scheduling hiccup of the sending engine (~1 ms on a
// shared two-core host): a bottleneck queue kept shallower than that runs dry
// whenever the sender is descheduled (measured through a 200 Mbit/s tbf: a
// 200 us target left the link idle ~10 % of the time).
// Flow scaling (as in Swift): a smaller window gets a higher target, up to
// kFsRangeNs more at kFsMinPkts, nothing from kFsMaxPkts up. Without it, two
// flows whose targets differ slightly settle with one holding the queue at its
// target and the other starved at the minimum window (measured: 2 vs 166 Mbit/s
// through one 200 Mbit/s tbf); with it, the starved one's target rises above
// the other's until their windows meet.
constexpr double kFsRangeNs = 2'000'000;
constexpr double kFsMinPkts = 0.1, kFsMaxPkts = 64;
// No part of the target follows a measured minimum RTT (an earlier version used
// 2x the path's minimum): a path that first measures while another flow holds a
// standing queue takes that queue for its "empty" RTT and outbids every other
// flow's target for good (measured: 180 vs 2 Mbit/s; capped at 2 ms: 161 vs 23).
}  // namespace

Swift::Swift(const CcParams& p) : p_(p), cwnd_(p.init_window > 0 ? p.init_window : 16.0 * p.mss), min_cwnd_(0.1 * p.mss) {}

uint64_t Swift::target_ns() const {
  static const double alpha = kFsRangeNs / (1 / std::sqrt(kFsMinPkts) - 1 / std::sqrt(kFsMaxPkts));
  static const double beta = alpha / std::sqrt(kFsMaxPkts);
  const double pkts = std::max(cwnd_ / p_.mss, kFsMinPkts);
  const double fs = std::clamp(alpha / std::sqrt(pkts) - beta, 0.0, kFsRangeNs);
  return p_.target_ns + uint64_t(fs);
}

void Swift::on_ack(uint64_t now_ns, uint64_t acked, uint64_t delay_ns, uint64_t srtt_ns) {
  if (delay_ns) last_delay_ns_ = delay_ns;
  uint64_t delay = delay_ns ? delay_ns : last_delay_ns_;
  if (!delay) delay = srtt_ns;
  const double mss = p_.mss;
  const uint64_t target = target_ns();
  if (delay < target) {
    if (cwnd_ >= mss)
      cwnd_ += kAdditive * mss * double(acked) / cwnd_;
    else
      cwnd_ += kAdditive * double(acked);
  } else if (delay_ns && may_decrease(now_ns, srtt_ns)) {
    double excess = double(delay - target) / double(delay);
    cwnd_ *= std::max(1.0 - kBeta * excess, 1.0 - kMaxMdf);
    last_decrease_ns_ = now_ns;
  }
  cwnd_ = std::clamp(cwnd_, min_cwnd_, p_.max_window);
}

void Swift::on_loss(uint64_t now_ns, uint64_t srtt_ns) {
  // Delay is the congestion signal: a loss while the delay is below target is
  // taken for corruption or a random drop, not for a full queue.
  if (last_delay_ns_ >= target_ns() && may_decrease(now_ns, srtt_ns)) {
    cwnd_ = std::max(min_cwnd_, cwnd_ * (1.0 - kMaxMdf));
    last_decrease_ns_ = now_ns;
  }
}

void Swift::on_timeout(uint64_t now_ns) {
  cwnd_ = std::max(min_cwnd_, cwnd_ * (1.0 - kMaxMdf));
  last_decrease_ns_ = now_ns;
}

double Swift::rate(uint64_t srtt_ns) const {
  // Pace only below one packet per RTT; above that the window clocks packets out.
  if (cwnd_ >= p_.mss || srtt_ns == 0) return 0;
  return cwnd_ * 1e9 / double(srtt_ns);
}

}  // namespace uccl::net
