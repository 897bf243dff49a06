// The datapath moves packets; it knows nothing of flows, reliability or
// congestion control. Flows hand it batches of packets (a header and a payload
// gathered from user memory) and take batches of received packets back.
//
// Shaped so that other datapaths can slot in without touching flows or CC: a
// "queue" is whatever gives a path its own route (a UDP source port here; a
// queue pair for RDMA verbs, an XDP socket queue for AF_XDP), and wait() is
// where the engine sleeps on it.
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

class Datapath {
 public:
  virtual ~Datapath() = default;
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
  // Blocks until a queue is readable, `extra_fd` is readable, or timeout_ns passes (-1: no limit).
  virtual void wait(int extra_fd, int64_t timeout_ns) = 0;
};

}  // namespace uccl
