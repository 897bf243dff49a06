// The datapath moves packets; it knows nothing of flows, reliability or
// congestion control. Flows hand it batches of packets (a header and a payload
// gathered from user memory) and take batches of received packets back.
//
// Shaped so that other datapaths slot in later without touching flows or CC:
//  - a "queue" is whatever gives a path its own route: a UDP source port here,
//    a queue pair for RDMA verbs (UC/RC), an XDP socket queue for AF_XDP;
//  - max_payload() lets a datapath that segments in hardware (verbs: one
//    write-with-immediate per 64 KiB chunk) ask for larger packets;
//  - wait_fd() lets the engine sleep on it (a completion channel fd for verbs).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace uccl {

// A peer's datapath address, as decoded from its published blob.
struct PeerAddress {
  uint32_t ipv4 = 0;            // network byte order
  uint16_t ports[256] = {0};    // one per queue, network byte order
  int num_queues = 0;
};

struct TxPacket {
  int queue;                // local queue (path) to send from
  const PeerAddress* peer;  // destination; queue q goes to peer queue q % peer->num_queues
  const void* hdr;          // header bytes (copied by the datapath before send returns)
  uint32_t hdr_len;
  const void* payload;      // payload straight from user memory
  uint32_t payload_len;
};

struct RxPacket {
  int queue;                // local queue it arrived on
  const char* data;         // valid until the next recv()
  uint32_t len;
  uint32_t src_ipv4;        // network byte order
  uint16_t src_port;        // network byte order
};

struct DatapathStats {
  uint64_t tx_packets = 0, tx_bytes = 0, tx_calls = 0, tx_errors = 0;
  uint64_t tx_msgs = 0;  // datagrams handed to the kernel (a GSO train counts once)
  uint64_t rx_packets = 0, rx_bytes = 0, rx_calls = 0;
  uint64_t rx_msgs = 0;   // datagrams read (a GRO train counts once)
  uint64_t rx_polls = 0;  // readiness checks (epoll)
  bool gso = false, gro = false;
};

class Datapath {
 public:
  virtual ~Datapath() = default;
  virtual int num_queues() const = 0;
  // Largest packet (header + payload) this datapath carries.
  virtual uint32_t max_packet() const = 0;
  // Opaque bytes a peer decodes with decode_address().
  virtual std::string local_address() const = 0;
  virtual bool decode_address(const std::string& blob, PeerAddress* out) const = 0;
  // Sends a batch; returns how many packets went out (the rest count as lost:
  // reliability above repairs them, as it does any loss).
  virtual size_t send(const TxPacket* pkts, size_t n) = 0;
  // Sends one packet back to where an RxPacket came from (acks).
  virtual void reply(int queue, uint32_t dst_ipv4, uint16_t dst_port, const void* data, uint32_t len) = 0;
  // Receives up to n packets from queues that are ready, without blocking.
  virtual size_t recv(RxPacket* out, size_t n) = 0;
  // Blocks until a queue is readable, `extra_fd` is readable, or timeout_ns passes.
  // Returns true if something is readable.
  virtual bool wait(int extra_fd, int64_t timeout_ns) = 0;
  virtual DatapathStats stats() const = 0;
  virtual std::string describe() const = 0;
};

}  // namespace uccl
