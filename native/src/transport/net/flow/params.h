// What a flow is configured with: the connection's identity (ranks, instance
// nonces, job secret, the peer's address) and the net settings (NetConfig).
#pragma once
#include <cstdint>
#include <string>

#include "transport/net/datapath/datapath.h"

namespace uccl::net {

struct FlowParams {
  int my_rank = 0, peer_rank = 0;
  uint32_t my_nonce = 0, peer_nonce = 0;
  uint64_t secret = 0;
  PeerAddress peer_addr;
  int num_paths = 16;
  std::string cc = "swift";
  uint32_t mtu = 1472;  // wire bytes per packet (uccl header included)
  double rto_ms = 5.0;
  int max_retries = 50;
  uint64_t swift_target_ns = 1'500'000;
};

}  // namespace uccl::net
