// The net side of an endpoint: a UDP datapath (sockets bound at creation), an
// engine thread started with the first connection, and one Flow per peer.
// local_address() = our instance nonce + the datapath's address blob.
#include "transport/net/net_transport.h"

#include <cstring>
#include <random>

#include "common/errors.h"
#include "transport/net/datapath/udp_datapath.h"
#include "transport/net/engine.h"
#include "transport/net/net_channel.h"

namespace uccl {

namespace {

class UdpNetTransport final : public NetTransport {
 public:
  UdpNetTransport(int rank, uint64_t secret, const NetConfig& cfg, Doorbell* bell, RegionTable* table)
      : rank_(rank), secret_(secret), cfg_(cfg), table_(table) {
    if (rank > 0xffff) raise(ErrorKind::Argument, "net: rank ", rank, " exceeds the 16-bit rank field");
    if (cfg.num_paths < 1 || cfg.num_paths > kMaxPaths)
      raise(ErrorKind::Argument, "UCCL_NUM_PATHS=", cfg.num_paths, ": must be in [1, ", kMaxPaths, "]");
    if (cfg.mtu < kMinMtu || cfg.mtu > kMaxMtu)
      raise(ErrorKind::Argument, "UCCL_MTU=", cfg.mtu, ": must be in [", kMinMtu, ", ", kMaxMtu, "]");
    if (cfg.max_retries < 1) raise(ErrorKind::Argument, "UCCL_MAX_RETRIES must be >= 1, got ", cfg.max_retries);
    if (!(cfg.swift_target_us > 0))
      raise(ErrorKind::Argument, "UCCL_SWIFT_TARGET_US must be positive, got ", cfg.swift_target_us);
    net::make_cc(cfg.cc, net::CcParams{uint32_t(cfg.mtu), 1e6});  // reject an unknown UCCL_CC now
    UdpDatapathConfig dc{cfg.ifname, cfg.addr, cfg.num_paths, uint32_t(cfg.mtu), cfg.stats_file};
    auto dp = std::make_unique<UdpDatapath>(dc);
    uint32_t nonce = 0;
    std::random_device rd;
    while (nonce == 0) nonce = rd();
    // Linger long enough to re-ack a peer's retransmission after our last ack was lost.
    double linger_s = std::max(0.2, 8 * cfg.rto_ms / 1e3);
    engine_ = std::make_unique<net::Engine>(std::move(dp), rank, nonce, bell, linger_s);
  }

  std::string local_address() const override {
    uint32_t nonce = engine_->nonce();
    std::string out(reinterpret_cast<const char*>(&nonce), sizeof(nonce));
    return out + engine_->datapath().local_address();
  }

  std::unique_ptr<Channel> connect(int peer, const std::string& peer_address) override {
    net::FlowParams p;
    p.my_rank = rank_;
    p.peer_rank = peer;
    p.my_nonce = engine_->nonce();
    p.secret = secret_;
    if (peer_address.size() < 4 ||
        !engine_->datapath().decode_address(peer_address.substr(4), &p.peer_addr))
      raise(ErrorKind::PeerFailure, "rank ", rank_, ": connect to rank ", peer,
            ": its net address is malformed (another uccl version?)");
    std::memcpy(&p.peer_nonce, peer_address.data(), 4);
    p.num_paths = cfg_.num_paths;
    p.cc = cfg_.cc;
    p.mtu = uint32_t(cfg_.mtu);
    p.rto_ms = cfg_.rto_ms;
    p.max_retries = cfg_.max_retries;
    p.swift_target_ns = uint64_t(cfg_.swift_target_us * 1e3);
    auto flow = std::make_shared<net::Flow>(p, table_);
    engine_->add_flow(flow);
    return std::make_unique<net::NetChannel>(flow, engine_.get());
  }

 private:
  int rank_;
  uint64_t secret_;
  NetConfig cfg_;
  RegionTable* table_;
  std::unique_ptr<net::Engine> engine_;
};

}  // namespace

std::unique_ptr<NetTransport> NetTransport::create(int rank, uint64_t secret, const NetConfig& cfg, Doorbell* own_bell,
                                                   RegionTable* own_table) {
  return std::make_unique<UdpNetTransport>(rank, secret, cfg, own_bell, own_table);
}

}  // namespace uccl
