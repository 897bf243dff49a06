// Each congestion-control algorithm's response to a scripted trace of acks,
// delays, losses and timeouts, against values worked out from its definition.
#include <gtest/gtest.h>

#include <cmath>

#include "transport/net/cc/cubic.h"
#include "transport/net/cc/swift.h"

namespace uccl::net {
namespace {

constexpr double kMss = 1000;
constexpr uint64_t kUs = 1000, kMs = 1000 * kUs, kS = 1000 * kMs;

CcParams cc_params(double init_window, uint64_t target_ns = 1 * kMs) {
  CcParams p{uint32_t(kMss), 1e7};
  p.init_window = init_window;
  p.target_ns = target_ns;
  return p;
}

// ---------------------------------------------------------------- swift

// At 64 packets or more flow scaling adds nothing: the target is the setting.
TEST(Swift, TargetIsTheSettingForLargeWindowsAndRisesAsTheWindowShrinks) {
  EXPECT_EQ(Swift(cc_params(100 * kMss)).target_ns(), 1 * kMs);
  EXPECT_EQ(Swift(cc_params(64 * kMss)).target_ns(), 1 * kMs);
  const uint64_t at8 = Swift(cc_params(8 * kMss)).target_ns(), at1 = Swift(cc_params(1 * kMss)).target_ns();
  EXPECT_GT(at8, 1 * kMs);
  EXPECT_GT(at1, at8);
  EXPECT_LE(Swift(cc_params(0.1 * kMss)).target_ns(), 3 * kMs);  // at most 2 ms more
}

// Below the target the window grows by acked/cwnd packets per ack: one packet per window's worth of acks.
TEST(Swift, GrowsOnePacketPerRoundTripBelowTarget) {
  Swift cc(cc_params(100 * kMss));
  uint64_t now = 1 * kS;
  cc.on_ack(now, uint64_t(kMss), 200 * kUs, 300 * kUs);
  EXPECT_DOUBLE_EQ(cc.window(), 100 * kMss + kMss * kMss / (100 * kMss));
  double w = cc.window();
  for (int i = 0; i < 100; ++i) cc.on_ack(now += 3 * kUs, uint64_t(kMss), 200 * kUs, 300 * kUs);
  EXPECT_GT(cc.window(), w + 0.99 * kMss);
  EXPECT_LT(cc.window(), w + 1.0 * kMss);
}

// Above the target it shrinks by beta x (delay - target) / delay (beta = 0.8),
// at most once per RTT and never by more than half.
TEST(Swift, ShrinksInProportionToTheExcessDelayOncePerRoundTrip) {
  Swift cc(cc_params(100 * kMss));
  const uint64_t srtt = 1500 * kUs;
  uint64_t now = 1 * kS;
  cc.on_ack(now, uint64_t(kMss), 1500 * kUs, srtt);  // excess 1/3 of the delay
  const double once = 100 * kMss * (1 - 0.8 / 3);
  EXPECT_NEAR(cc.window(), once, 1e-6);
  cc.on_ack(now + srtt / 2, uint64_t(kMss), 1500 * kUs, srtt);  // within the same RTT: no second cut
  EXPECT_NEAR(cc.window(), once, 1e-6);
  cc.on_ack(now + srtt, uint64_t(kMss), 10 * kMs, srtt);  // 90 % excess: capped at half
  EXPECT_NEAR(cc.window(), once / 2, 1e-6);
}

// Delay is swift's signal: a loss while the delay is below target is taken for
// a random drop; above target it halves the window; a timeout always does.
TEST(Swift, LossCutsOnlyWithDelayAboveTargetTimeoutAlways) {
  Swift cc(cc_params(100 * kMss));
  uint64_t now = 1 * kS;
  cc.on_ack(now, 0, 200 * kUs, 300 * kUs);
  cc.on_loss(now + 1 * kMs, 300 * kUs);
  EXPECT_DOUBLE_EQ(cc.window(), 100 * kMss);
  cc.on_timeout(now + 2 * kMs);
  EXPECT_DOUBLE_EQ(cc.window(), 50 * kMss);

  Swift hot(cc_params(100 * kMss));
  hot.on_ack(now, 0, 1000 * kMs, 300 * kUs);  // far above target: halved
  ASSERT_DOUBLE_EQ(hot.window(), 50 * kMss);
  hot.on_loss(now + 1 * kMs, 300 * kUs);  // the delay is still above target: halved again
  EXPECT_DOUBLE_EQ(hot.window(), 25 * kMss);
}

// Below one packet the window is sent paced: rate = window / srtt.
TEST(Swift, PacesOnlyBelowOnePacket) {
  EXPECT_EQ(Swift(cc_params(2 * kMss)).rate(1 * kMs), 0.0);
  EXPECT_DOUBLE_EQ(Swift(cc_params(0.5 * kMss)).rate(1 * kMs), 0.5 * kMss / 1e-3);
  Swift cc(cc_params(1 * kMss));
  for (int i = 0; i < 10; ++i) cc.on_timeout(uint64_t(i + 1) * kS);
  EXPECT_DOUBLE_EQ(cc.window(), 0.1 * kMss);  // the floor
  EXPECT_GT(cc.rate(1 * kMs), 0.0);
}

// ---------------------------------------------------------------- cubic

// Slow start: every acked byte adds one, so a window's worth of acks doubles it.
TEST(Cubic, SlowStartDoublesPerRoundTrip) {
  Cubic cc(cc_params(10 * kMss));
  uint64_t now = 1 * kS;
  for (int i = 0; i < 10; ++i) cc.on_ack(now += 10 * kUs, uint64_t(kMss), 0, 100 * kUs);
  EXPECT_DOUBLE_EQ(cc.window(), 20 * kMss);
}

// A loss keeps 0.7 of the window, once per RTT; a timeout restarts from 2 packets.
TEST(Cubic, LossKeepsSevenTenthsOncePerRoundTripTimeoutRestarts) {
  Cubic cc(cc_params(20 * kMss));
  const uint64_t srtt = 100 * kUs;
  uint64_t now = 1 * kS;
  cc.on_loss(now, srtt);
  EXPECT_NEAR(cc.window(), 14 * kMss, 1e-6);
  cc.on_loss(now + srtt / 2, srtt);  // the same window of losses
  EXPECT_NEAR(cc.window(), 14 * kMss, 1e-6);
  cc.on_loss(now + srtt, srtt);
  EXPECT_NEAR(cc.window(), 9.8 * kMss, 1e-6);
  cc.on_timeout(now + 2 * srtt);
  EXPECT_NEAR(cc.window(), 2 * kMss, 1e-6);
  // slow start again, up to 0.7 of the window before the timeout, then slower
  for (int i = 0; i < 20; ++i) cc.on_ack(now += 10 * kUs, uint64_t(kMss), 0, srtt);
  EXPECT_GE(cc.window(), 14 * 0.7 * 0.7 * kMss);
  EXPECT_LT(cc.window(), 22 * kMss);
}

// After a loss from W_max = 20 packets the window follows W(t) = C (t - K)^3 + W_max
// (C = 0.4, K = cbrt(W_max (1 - 0.7) / C) = cbrt(15) s): below W_max before K,
// above it after. Acks are small so that the Reno floor stays below both.
TEST(Cubic, WindowStaysBelowTheLastMaximumUntilKThenGrowsPastIt) {
  const double k = std::cbrt(15.0);
  const double w_before_k = 0.4 * std::pow(0.5 * k - k, 3) * kMss + 20 * kMss;  // ~19.25 packets
  for (double t : {0.5 * k, 2 * k}) {
    Cubic cc(cc_params(20 * kMss));
    const uint64_t epoch = 1 * kS;
    cc.on_loss(epoch, 100 * kUs);
    cc.on_ack(epoch, 100, 0, 100 * kUs);  // opens the epoch at the loss
    const uint64_t at = epoch + uint64_t(t * 1e9);
    for (int i = 0; i < 300; ++i) cc.on_ack(at, 100, 0, 100 * kUs);
    if (t < k) {
      EXPECT_LT(cc.window(), 20 * kMss);
      EXPECT_LE(cc.window(), w_before_k + 1);
      EXPECT_GT(cc.window(), 14 * kMss);
    } else {
      EXPECT_GT(cc.window(), 20 * kMss);
      EXPECT_LE(cc.window(), 0.4 * std::pow(k, 3) * kMss + 20 * kMss + 1);  // W(2K) = 26 packets
    }
  }
}

}  // namespace
}  // namespace uccl::net
