// The endpoint's window onto the net side (UDP datapath, flows, multipath,
// congestion control, loss recovery, implemented under transport/net/). The
// endpoint asks it for an address to publish and for a Channel per remote peer.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "generated/setting_defaults.h"
#include "transport/channel.h"
#include "transport/net/limits.h"
#include "transport/shm/doorbell.h"
#include "transport/region_table.h"

namespace uccl {

// Settings of the net channel. uccl/config.py declares each (default, bounds, help)
// and fills this struct; the defaults here come from the header it generates.
struct NetConfig {
  std::string ifname = defaults::ifname;  // UCCL_IFNAME: interface whose address we bind ("" = pick)
  std::string addr = defaults::addr;      // UCCL_ADDR: explicit address to bind, overrides ifname
  int num_paths = int(defaults::num_paths);  // UCCL_NUM_PATHS: UDP source ports sprayed over per peer
  std::string cc = defaults::cc;             // UCCL_CC: congestion control per path (swift | cubic)
  int mtu = int(defaults::mtu);              // UCCL_MTU: UDP payload bytes per packet (incl. uccl header)
  double rto_ms = defaults::rto_ms;          // UCCL_RTO_MS: initial retransmission timeout
  int max_retries = int(defaults::max_retries);       // UCCL_MAX_RETRIES: consecutive RTOs before a peer is failed
  double swift_target_us = defaults::swift_target_us;  // UCCL_SWIFT_TARGET_US: swift's delay target
  std::string stats_file = defaults::stats_file;      // UCCL_NET_DEBUG: append datapath counters here at teardown
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
