// Smoothed round-trip time and its variation (RFC 6298's estimator), shared by
// each path (congestion control, loss detection) and the flow (its RTO).
#pragma once
#include <cstdint>

namespace uccl::net {

inline void rtt_update(uint64_t rtt, uint64_t* srtt, uint64_t* rttvar) {
  if (*srtt == 0) {
    *srtt = rtt;
    *rttvar = rtt / 2;
    return;
  }
  const uint64_t dev = rtt > *srtt ? rtt - *srtt : *srtt - rtt;
  *rttvar = (3 * *rttvar + dev) / 4;
  *srtt = (7 * *srtt + rtt) / 8;
}

}  // namespace uccl::net
