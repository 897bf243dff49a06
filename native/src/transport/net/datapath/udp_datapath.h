// The kernel UDP datapath: one socket per queue (a distinct source port, so
// ECMP hashes each path onto its own route), batched with sendmmsg/recvmmsg,
// segmented with UDP GSO and coalesced with UDP GRO when the kernel offers
// them (plain datagrams otherwise).
#pragma once
#include <netinet/in.h>
#include <sys/socket.h>

#include <memory>
#include <vector>

#include "generated/setting_defaults.h"
#include "transport/net/datapath/datapath.h"
#include "transport/net/limits.h"

namespace uccl {

struct UdpDatapathConfig {
  std::string ifname;  // bind this interface's IPv4 address ("" = pick one)
  std::string addr;    // bind this address (overrides ifname)
  int num_queues = int(defaults::num_paths);
  uint32_t mtu = uint32_t(defaults::mtu);  // UDP payload bytes per packet
  std::string stats_file;  // append the counters here at teardown ("" = don't)
};

// Counters dumped at teardown with UCCL_NET_DEBUG=FILE.
struct DatapathStats {
  uint64_t tx_packets = 0, tx_bytes = 0, tx_calls = 0, tx_errors = 0;
  uint64_t tx_msgs = 0;  // datagrams handed to the kernel (a GSO train counts once)
  uint64_t rx_packets = 0, rx_bytes = 0, rx_calls = 0;
  uint64_t rx_msgs = 0;   // datagrams read (a GRO train counts once)
  uint64_t rx_polls = 0;  // readiness checks (epoll)
};

// Reads a peer's address blob (UdpDatapath::local_address: magic, IPv4, port
// count, ports), published at bootstrap; false if it is not one.
bool decode_udp_address(const std::string& blob, PeerAddress* out);
// The blob for an address (ports in network byte order, one per queue).
std::string encode_udp_address(uint32_t ipv4, const std::vector<uint16_t>& ports);

class UdpDatapath final : public Datapath {
 public:
  explicit UdpDatapath(const UdpDatapathConfig& cfg);  // throws uccl::Error
  ~UdpDatapath() override;

  std::string local_address() const override;
  bool decode_address(const std::string& blob, PeerAddress* out) const override;
  size_t send(const TxPacket* pkts, size_t n) override;
  void reply(int queue, uint32_t dst_ipv4, uint16_t dst_port, const void* data, uint32_t len) override;
  size_t recv(RxPacket* out, size_t n) override;
  void wait(int extra_fd, int64_t timeout_ns) override;

 private:
  size_t send_run(int queue, const TxPacket* pkts, size_t n);
  void add_ready(int fd_index);

  uint32_t mtu_;
  std::string stats_file_;
  uint32_t ipv4_ = 0;  // network byte order
  std::vector<int> fds_;
  std::vector<uint16_t> ports_;  // network byte order
  int epfd_ = -1;
  int extra_fd_ = -1;
  bool gso_ = false, gro_ = false;
  std::vector<int> ready_;       // queues known readable
  std::vector<char> ready_flag_;
  size_t ready_pos_ = 0;
  static constexpr int kPollEvery = 4;  // recv calls between readiness refreshes while queues stay ready
  int calls_since_poll_ = 0;
  // Receive slots: each holds one datagram or one GRO-coalesced train.
  static constexpr size_t kRxSlots = 16;
  static constexpr size_t kRxSlotBytes = 65536;
  std::unique_ptr<char[]> rx_arena_;
  DatapathStats stats_;
};

// Picks the IPv4 address to bind: `addr` if given, else `ifname`'s, else the
// first non-loopback interface that is up, else 127.0.0.1. Throws on a bad choice.
uint32_t choose_ipv4(const std::string& ifname, const std::string& addr);

}  // namespace uccl
