// Congestion control for one path. The flow reports acks, losses and timeouts;
// the algorithm answers with a window (bytes in flight) and optionally a pacing
// rate. One file per algorithm; make_cc picks one by name (UCCL_CC).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "generated/setting_defaults.h"

namespace uccl::net {

struct CcParams {
  uint32_t mss;          // payload bytes per full packet
  double max_window;     // bytes; the flow's receive window bounds every path
  double init_window = 0;  // bytes; 0 = the algorithm's own default
  // Delay-based algorithms: the queueing delay aimed at (UCCL_SWIFT_TARGET_US).
  uint64_t target_ns = uint64_t(defaults::swift_target_us * 1000);
};

class CongestionControl {
 public:
  virtual ~CongestionControl() = default;
  // `acked` bytes left the network; delay_ns > 0 when this ack carried a sample for
  // this path: the RTT of its newest packet acked, less what the forward path did
  // not cause (the packet's wait for the ack, the ack's queueing on the way back).
  virtual void on_ack(uint64_t now_ns, uint64_t acked, uint64_t delay_ns, uint64_t srtt_ns) = 0;
  // A packet sent on this path was declared lost (fast retransmit).
  virtual void on_loss(uint64_t now_ns, uint64_t srtt_ns) = 0;
  // The retransmission timer fired for this path.
  virtual void on_timeout(uint64_t now_ns) = 0;
  virtual double window() const = 0;  // bytes allowed in flight
  // Pacing rate in bytes per second; 0 = send as the window allows.
  virtual double rate(uint64_t srtt_ns) const = 0;
};

// The names make_cc knows, for uccl/config.py to check UCCL_CC at start-up.
std::vector<std::string> cc_names();
std::unique_ptr<CongestionControl> make_cc(const std::string& name, const CcParams& p);

}  // namespace uccl::net
