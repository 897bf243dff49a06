#include "transport/net/cc/cubic.h"

#include <algorithm>
#include <cmath>

namespace uccl::net {

namespace {
constexpr double kC = 0.4;      // cubic scaling, packets / s^3
constexpr double kBeta = 0.7;   // window kept after a loss
}  // namespace

Cubic::Cubic(const CcParams& p) : p_(p), cwnd_(p.init_window > 0 ? p.init_window : 10.0 * p.mss), ssthresh_(p.max_window) {}

void Cubic::on_ack(uint64_t now_ns, uint64_t acked, uint64_t, uint64_t) {
  const double mss = p_.mss;
  if (cwnd_ < ssthresh_) {
    cwnd_ += double(acked);
  } else {
    if (epoch_ns_ == 0) {  // first ack of a congestion-avoidance epoch
      epoch_ns_ = now_ns;
      w_max_ = std::max(w_max_, cwnd_);
      k_s_ = std::cbrt((w_max_ / mss) * (1.0 - kBeta) / kC);
      reno_w_ = cwnd_;
    }
    double t = double(now_ns - epoch_ns_) * 1e-9;
    double target = (kC * std::pow(t - k_s_, 3.0)) * mss + w_max_;
    reno_w_ += mss * double(acked) / reno_w_;  // what Reno would have by now
    target = std::max(target, reno_w_);
    if (target > cwnd_) cwnd_ += (target - cwnd_) * double(acked) / cwnd_;
  }
  cwnd_ = std::clamp(cwnd_, mss, p_.max_window);
}

void Cubic::on_loss(uint64_t now_ns, uint64_t srtt_ns) {
  if (now_ns - last_loss_ns_ < srtt_ns) return;  // one reduction per window of losses
  last_loss_ns_ = now_ns;
  w_max_ = cwnd_;
  cwnd_ = std::max(double(p_.mss), cwnd_ * kBeta);
  ssthresh_ = cwnd_;
  epoch_ns_ = 0;
}

void Cubic::on_timeout(uint64_t now_ns) {
  w_max_ = cwnd_;
  ssthresh_ = std::max(2.0 * p_.mss, cwnd_ * kBeta);
  cwnd_ = 2.0 * p_.mss;
  epoch_ns_ = 0;
  last_loss_ns_ = now_ns;
}

}  // namespace uccl::net
