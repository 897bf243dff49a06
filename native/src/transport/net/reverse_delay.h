// The queueing delay an ack met on its way back from the peer.
//
// An RTT sample holds the queues of both directions. In an all_to_all every link
// carries data both ways, so acks wait behind the reverse direction's data, and
// a delay-based window would shrink for a queue it does not fill (measured on
// the emulated fabric with swift: a transfer kept the uplinks 99 % busy one way,
// 93-94 % when the peer sent back at the same time).
//
// The peer stamps each ack with its own clock when it leaves. The clocks differ
// by an unknown offset, so the ack's transit time is known only up to a
// constant: the smallest recent value stands for the empty queue (LEDBAT's base
// delay). The minimum spans the current and the previous epoch, so a drift
// between the clocks (tens of ppm) ages out instead of biasing the estimate for
// good; a queue that never drains within two epochs is counted as base, which
// errs the safe way (the window then sees it, as it would without this).
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>

namespace uccl::net {

class ReverseDelay {
 public:
  // now: our clock when the ack arrived; ack_sent: the peer's when it left.
  // Returns how much longer than the recent minimum this ack took, in ns.
  uint64_t sample(uint64_t now, uint64_t ack_sent) {
    const int64_t raw = int64_t(now - ack_sent);  // transit + clock offset (either sign)
    if (epoch_start_ == 0 || now - epoch_start_ > kEpochNs) {
      prev_ = cur_;
      cur_ = raw;
      epoch_start_ = now;
    } else {
      cur_ = std::min(cur_, raw);
    }
    return uint64_t(raw - std::min(cur_, prev_));
  }

 private:
  static constexpr uint64_t kEpochNs = 2'000'000'000;
  uint64_t epoch_start_ = 0;
  int64_t cur_ = std::numeric_limits<int64_t>::max(), prev_ = std::numeric_limits<int64_t>::max();
};

}  // namespace uccl::net
