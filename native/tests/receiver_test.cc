// The receiving half of a flow fed scripted packets (no sender, no sockets): out
// of order and with duplicates, each byte is placed once, the operation's event
// is released once, and every ack carries the cumulative ack and SACK bits of
// exactly the packets received so far.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "flow_harness.h"

namespace uccl::net::testing {
namespace {

constexpr int kPackets = 300;  // spans five SACK words, so bits cross word boundaries
constexpr uint64_t kTotal = uint64_t(kPackets) * kChunk - 37;  // a short last packet

// Packet `i` of rank 0's write (msg 0) of kTotal bytes of `src` into `key`, with imm 99.
Packet write_packet(int i, const std::vector<char>& src, uint64_t key) {
  DataWire w{};
  w.seq = uint32_t(i);
  w.msg_id = 0;
  w.index = uint32_t(i);
  w.op = kOpWrite;
  w.flags = uint8_t(kFlagImm | (i == kPackets - 1 ? kFlagLast : 0));
  w.imm = 99;
  w.total = kTotal;
  w.a = key;
  const uint64_t off = uint64_t(i) * kChunk;
  const uint32_t len = uint32_t(std::min<uint64_t>(kChunk, kTotal - off));
  Packet p;
  p.payload.assign(src.begin() + ptrdiff_t(off), src.begin() + ptrdiff_t(off + len));
  EXPECT_TRUE(decode_data(w, len, &p.h));
  return p;
}

class ReceiverScript : public ::testing::Test {
 protected:
  ReceiverScript() : b_(params(1, 0), regions_.table()), region_(kTotal, 0), src_(kTotal) {
    key_ = regions_.add(region_.data(), region_.size(), kRemoteWrite);
    std::mt19937 rng(7);
    for (char& c : src_) c = char(rng());
  }
  uint64_t drops(Drop d) { return b_.drops().total[d].load(); }

  Regions regions_;
  Flow b_;
  std::vector<char> region_, src_;
  uint64_t key_ = 0;
  uint64_t t_ = now_ns();
};

TEST_F(ReceiverScript, OutOfOrderWithDuplicatesPlacesEachByteOnceAndAcksExactlyWhatArrived) {
  std::mt19937 rng(2024);
  std::vector<int> order(kPackets);
  for (int i = 0; i < kPackets; ++i) order[size_t(i)] = i;
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<bool> received(kPackets, false);
  uint64_t duplicates = 0;
  for (size_t n = 0; n < order.size(); ++n) {
    const int i = order[n];
    deliver(b_, write_packet(i, src_, key_), t_);
    received[size_t(i)] = true;
    if (rng() % 4 == 0) {  // a duplicate of an earlier packet, carrying other bytes: must not be placed
      Packet dup = write_packet(order[rng() % (n + 1)], src_, key_);
      std::fill(dup.payload.begin(), dup.payload.end(), char(0xEE));
      deliver(b_, dup, t_);
      ++duplicates;
    }
    t_ += 2 * kMs;  // any delayed ack is due by then
    const auto a = ack(b_, t_);
    ASSERT_TRUE(a.has_value()) << "no ack owed after packet " << i;
    const AckHeader want = ack_of(received, 0, t_);
    ASSERT_EQ(a->cum_ack, want.cum_ack) << "after " << n + 1 << " packets";
    for (size_t w = 0; w < kSackWords; ++w) ASSERT_EQ(a->sack[w], want.sack[w]) << "word " << w << " after " << n + 1;
    ASSERT_EQ(a->rejects, 0u);
  }
  EXPECT_EQ(drops(kDropDuplicate), duplicates);
  EXPECT_GT(duplicates, 0u);
  EXPECT_EQ(b_.stats().packets_received.load(), uint64_t(kPackets));
  EXPECT_EQ(b_.stats().bytes_received.load(), kTotal);
  EXPECT_EQ(region_, src_);
  b_.publish();
  Flow::Output out;
  b_.take_output(&out);
  ASSERT_EQ(out.events.size(), 1u);  // the write with immediate, released once
  EXPECT_EQ(out.events[0].imm, 99u);
  EXPECT_EQ(out.events[0].len, kTotal);
  EXPECT_EQ(out.events[0].key_or_tag, key_);
}

// A duplicate is acked at once (the ack that covered it may have been lost);
// a packet beyond the receive window is dropped and counted, and not acked.
TEST_F(ReceiverScript, DuplicatesAreAckedAtOnceAndPacketsBeyondTheWindowDropped) {
  deliver(b_, write_packet(0, src_, key_), t_);
  ASSERT_TRUE(ack(b_, t_ + 2 * kMs).has_value());
  deliver(b_, write_packet(0, src_, key_), t_ + 3 * kMs);
  const auto again = ack(b_, t_ + 3 * kMs);  // no delay
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->cum_ack, 1u);
  Packet far = write_packet(1, src_, key_);
  far.h.seq32 = uint32_t(1 + kWindow);
  deliver(b_, far, t_ + 4 * kMs);
  EXPECT_EQ(drops(kDropOutOfWindow), 1u);
  EXPECT_FALSE(ack(b_, t_ + 10 * kMs).has_value());
}

// Acks go back on the path a packet came in on, but only to the peer's own sockets
// (its published address): a packet sent from anywhere else -- a valid packet replayed
// by a third party -- is processed, and its ack still goes to the peer.
TEST(ReceiverReplies, AcksGoOnlyToThePeersPublishedSockets) {
  Regions regions;
  std::vector<char> region(kTotal, 0), src(kTotal, 1);
  const uint64_t key = regions.add(region.data(), region.size(), kRemoteWrite);
  FlowParams p = params(1, 0);
  p.peer_addr.ipv4 = 0x0100000a;  // 10.0.0.1
  p.peer_addr.num_queues = 2;
  p.peer_addr.ports[0] = 4000;
  p.peer_addr.ports[1] = 4001;
  Flow b(p, regions.table());
  const uint64_t t = now_ns();
  deliver(b, write_packet(0, src, key), t, RxPacket{1, nullptr, 0, 0x0100000a, 4001});
  auto r = ack_route(b, t + 2 * kMs);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->queue, 1);
  EXPECT_EQ(r->ip, 0x0100000au);
  EXPECT_EQ(r->port, 4001);
  // The same packet again, from a stranger's socket: a duplicate, acked at once, to the peer.
  deliver(b, write_packet(0, src, key), t + 3 * kMs, RxPacket{0, nullptr, 0, 0x0200000a, 5555});
  r = ack_route(b, t + 3 * kMs);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->ip, 0x0100000au) << "an ack was redirected to the replaying host";
  EXPECT_EQ(r->port, 4001);
  // The peer's own address, another of its sockets: followed.
  deliver(b, write_packet(1, src, key), t + 4 * kMs, RxPacket{0, nullptr, 0, 0x0100000a, 4000});
  r = ack_route(b, t + 8 * kMs);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->queue, 0);
  EXPECT_EQ(r->port, 4000);
}

}  // namespace
}  // namespace uccl::net::testing
