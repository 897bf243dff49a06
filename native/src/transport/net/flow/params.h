// What a flow is configured with: the connection's identity (ranks, instance
// nonces, job secret, the peer's address) and the net settings (NetConfig).
#pragma once
#include <cstdint>
#include <string>

#include "generated/setting_defaults.h"
#include "transport/net/datapath/datapath.h"

namespace uccl::net {

struct FlowParams {
  int my_rank = 0, peer_rank = 0;
  uint32_t my_nonce = 0, peer_nonce = 0;
  uint64_t secret = 0;
  PeerAddress peer_addr;
  // The net settings (NetConfig), defaults from their one declaration.
  int num_paths = int(defaults::num_paths);
  std::string cc = defaults::cc;
  uint32_t mtu = uint32_t(defaults::mtu);  // wire bytes per packet (uccl header included)
  double rto_ms = defaults::rto_ms;
  int max_retries = int(defaults::max_retries);
  uint64_t swift_target_ns = uint64_t(defaults::swift_target_us * 1000);
};

}  // namespace uccl::net
