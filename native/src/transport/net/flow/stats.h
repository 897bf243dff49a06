// A flow's counters: written by the engine thread only (bump), read by stats().
#pragma once
#include <atomic>
#include <cstdint>

namespace uccl::net {

struct FlowStats {
  std::atomic<uint64_t> packets_sent{0}, bytes_sent{0}, packets_received{0}, bytes_received{0};
  std::atomic<uint64_t> retransmits{0}, timeouts{0}, tail_probes{0}, acks_sent{0}, acks_received{0};
  std::atomic<uint64_t> srtt_ns{0}, rto_ns{0};
  std::atomic<uint64_t> refused{0};  // operations of the peer's this side refused (bounds, keys, access)
};

}  // namespace uccl::net
