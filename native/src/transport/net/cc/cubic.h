// Loss-based congestion control in the style of CUBIC: slow start, then a
// window that follows a cubic curve around the size at the last loss, with a
// Reno-friendly floor; multiplicative decrease once per RTT on loss.
#pragma once
#include "transport/net/cc/cc.h"

namespace uccl::net {

class Cubic final : public CongestionControl {
 public:
  explicit Cubic(const CcParams& p);
  void on_ack(uint64_t now_ns, uint64_t acked, uint64_t delay_ns, uint64_t srtt_ns) override;
  void on_loss(uint64_t now_ns, uint64_t srtt_ns) override;
  void on_timeout(uint64_t now_ns) override;
  double window() const override { return cwnd_; }
  double rate(uint64_t) const override { return 0; }

 private:
  CcParams p_;
  double cwnd_, ssthresh_, w_max_ = 0, k_s_ = 0, reno_w_ = 0;
  uint64_t epoch_ns_ = 0, last_loss_ns_ = 0;
};

}  // namespace uccl::net
