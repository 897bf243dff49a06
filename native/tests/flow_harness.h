// Test harness: flows driven without sockets. Packets a flow pumps are decoded
// from its batch as the peer's engine would (decode_data), kept, and delivered
// when, in what order and how often a test chooses; acks likewise. Time is a
// virtual clock the test advances (it starts at the real monotonic clock, which
// the flow reads once at construction).
#pragma once
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "transport/net/flow/flow.h"
#include "transport/net/packet.h"
#include "transport/region_table.h"

namespace uccl::net::testing {

constexpr uint32_t kChunk = 100;                        // payload bytes per full packet
constexpr uint32_t kMtu = kChunk + sizeof(DataWire);    // so that the flow cuts kChunk-byte packets

// Rank `me`'s flow to rank `peer`: one path (no random path choice), cubic (no pacing).
inline FlowParams params(int me, int peer, int max_retries = 8, const std::string& cc = "cubic") {
  FlowParams p;
  p.my_rank = me;
  p.peer_rank = peer;
  p.my_nonce = 100 + uint32_t(me);
  p.peer_nonce = 100 + uint32_t(peer);
  p.secret = 0x5eed;
  p.num_paths = 1;
  p.cc = cc;
  p.mtu = kMtu;
  p.rto_ms = 5;
  p.max_retries = max_retries;
  return p;
}

// A region table over memory of its own.
class Regions {
 public:
  Regions() : slots_(new RegionSlot[kCap]()), table_(slots_.get(), kCap, true) {}
  RegionTable* table() { return &table_; }
  uint64_t add(void* p, uint64_t len, uint32_t flags) { return table_.add(uint64_t(p), len, flags); }

 private:
  static constexpr uint32_t kCap = 8;
  std::unique_ptr<RegionSlot[]> slots_;
  RegionTable table_;
};

// One data packet as the receiving engine hands it to its flow.
struct Packet {
  DataHeader h;
  std::vector<char> payload;
  uint64_t seq() const { return h.seq32; }  // tests stay far below 2^32
};

// Everything `f` sends at `now` (new packets and retransmissions), decoded.
inline std::vector<Packet> pump(Flow& f, uint64_t now) {
  auto batch = std::make_unique<TxBatch>();
  f.pump(now, batch.get());
  std::vector<Packet> out;
  for (size_t i = 0; i < batch->n; ++i) {
    const TxPacket& t = batch->pkts[i];
    DataWire w;
    std::memcpy(&w, t.hdr, sizeof(w));
    Packet p;
    p.payload.assign(static_cast<const char*>(t.payload), static_cast<const char*>(t.payload) + t.payload_len);
    EXPECT_TRUE(decode_data(w, t.payload_len, &p.h)) << "the flow sent a packet its peer cannot decode";
    out.push_back(std::move(p));
  }
  return out;
}

inline void deliver(Flow& to, const Packet& p, uint64_t now, const RxPacket& from = RxPacket{0, nullptr, 0, 0, 0}) {
  to.on_data(p.h, p.payload.data(), uint32_t(p.payload.size()), from, now);
}

// Where an ack goes: the local queue it leaves from and the destination.
struct AckRoute {
  int queue;
  uint32_t ip;
  uint16_t port;
};

// The ack `f` owes at `now` and where it goes.
inline std::optional<AckRoute> ack_route(Flow& f, uint64_t now) {
  AckHeader a{};
  AckRoute r{};
  if (!f.take_ack(&a, &r.queue, &r.ip, &r.port, now)) return std::nullopt;
  return r;
}

// The ack `f` owes, taken as late as `now` (delayed acks are due by then).
inline std::optional<AckHeader> ack(Flow& f, uint64_t now) {
  AckHeader a{};
  int queue;
  uint32_t ip;
  uint16_t port;
  if (!f.take_ack(&a, &queue, &ip, &port, now)) return std::nullopt;
  return a;
}

// An ack as `peer`'s receiver would send it, having received exactly `received` of [0, end).
inline AckHeader ack_of(const std::vector<bool>& received, uint64_t echo_seq, uint64_t now) {
  AckHeader a{};
  a.common.type = kAck;
  uint64_t cum = 0;
  while (cum < received.size() && received[cum]) ++cum;
  a.cum_ack = cum;
  for (uint64_t s = cum; s < received.size(); ++s)
    if (received[s]) a.sack[(s - cum) / 64] |= 1ull << ((s - cum) % 64);
  a.echo_seq = echo_seq;
  a.echo_path = 0;
  a.sent_ns = now;
  return a;
}

inline std::vector<Completion> completions(Flow& f) {
  f.publish();
  Flow::Output out;
  f.take_output(&out);
  return std::move(out.completions);
}

constexpr uint64_t kUs = 1000, kMs = 1000 * kUs;

}  // namespace uccl::net::testing
