// The endpoint's window onto the net side (UDP datapath, flows, multipath,
// congestion control, loss recovery, implemented under transport/net/). The
// endpoint asks it for an address to publish and for a Channel per remote peer.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "transport/channel.h"
#include "transport/shm/doorbell.h"
#include "transport/region_table.h"

namespace uccl {

struct NetConfig {
  std::string ifname;       // UCCL_IFNAME: interface whose address we bind ("" = pick)
  std::string addr;         // UCCL_ADDR: explicit address to bind, overrides ifname
  int num_paths = 16;       // UCCL_NUM_PATHS: UDP source ports sprayed over per peer
  std::string cc = "swift";  // UCCL_CC: congestion control per path (swift | cubic)
  int mtu = 1472;           // UCCL_MTU: UDP payload bytes per packet (incl. uccl header)
  double rto_ms = 5.0;      // UCCL_RTO_MS: initial retransmission timeout
  int max_retries = 50;     // UCCL_MAX_RETRIES: consecutive RTOs before a peer is failed
  double swift_target_us = 1500;  // UCCL_SWIFT_TARGET_US: swift's delay target before flow scaling
};

class NetTransport {
 public:
  // Cheap: binds sockets; engine threads start with the first connect().
  // `own_bell` is rung when completions are ready; `own_table` validates incoming writes.
  static std::unique_ptr<NetTransport> create(int rank, uint64_t secret, const NetConfig& cfg, Doorbell* own_bell,
                                              RegionTable* own_table);
  virtual ~NetTransport() = default;
  // Published in this endpoint's descriptor; opaque to everyone but NetTransport.
  virtual std::string local_address() const = 0;
  virtual std::unique_ptr<Channel> connect(int peer, const std::string& peer_address) = 0;
};

}  // namespace uccl
