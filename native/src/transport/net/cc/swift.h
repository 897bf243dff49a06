// Delay-based congestion control in the style of Swift: keep the measured RTT
// near a target; grow additively below it, shrink in proportion to the excess
// above it (at most once per RTT). Windows below one packet are paced. The
// target rises as the window shrinks (flow scaling), which is what makes flows
// sharing a bottleneck converge to equal windows.
#pragma once
#include "transport/net/cc/cc.h"

namespace uccl::net {

class Swift final : public CongestionControl {
 public:
  explicit Swift(const CcParams& p);
  void on_ack(uint64_t now_ns, uint64_t acked, uint64_t delay_ns, uint64_t srtt_ns) override;
  void on_loss(uint64_t now_ns, uint64_t srtt_ns) override;
  void on_timeout(uint64_t now_ns) override;
  double window() const override { return cwnd_; }
  double rate(uint64_t srtt_ns) const override;
  uint64_t target_ns() const;

 private:
  bool may_decrease(uint64_t now_ns, uint64_t srtt_ns) const { return now_ns - last_decrease_ns_ >= srtt_ns; }

  CcParams p_;
  double cwnd_;
  double min_cwnd_;
  uint64_t last_decrease_ns_ = 0;
  uint64_t last_delay_ns_ = 0;
};

}  // namespace uccl::net
