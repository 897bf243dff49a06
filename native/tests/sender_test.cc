// The sending half of a flow driven by scripted acks and silences (no peer, no
// sockets): RACK-like loss detection resends exactly the holes, reordering
// within the window is not taken for loss, the retransmission timer backs off
// and gives the peer up after max_retries, failing every pending operation.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "flow_harness.h"

namespace uccl::net::testing {
namespace {

std::set<uint64_t> seqs(const std::vector<Packet>& pkts) {
  std::set<uint64_t> s;
  for (const Packet& p : pkts) s.insert(p.seq());
  return s;
}

class SenderScript : public ::testing::Test {
 protected:
  explicit SenderScript(int max_retries = 8) : a_(params(0, 1, max_retries), regions_.table()) {}

  // Submits a write of `packets` full packets and sends it at `now`.
  std::vector<Packet> send_write(uint64_t wr_id, int packets, uint64_t now) {
    a_.submit(write_op(wr_id, src_, uint64_t(packets) * kChunk, /*rkey=*/1, /*off=*/0));
    a_.take_submissions(now);
    return pump(a_, now);
  }
  uint64_t timeouts() { return a_.stats().timeouts.load(); }
  uint64_t retransmits() { return a_.stats().retransmits.load(); }

  Regions regions_;
  Flow a_;
  char src_[100 * kChunk] = {};
  const uint64_t t0_ = now_ns();
};

// Packets 0-4 leave at t0, 5-9 a millisecond later (beyond the 250 us
// reordering window); 1 and 3 never arrive. An ack showing that packets sent
// after them were delivered makes exactly 1 and 3 lost.
TEST_F(SenderScript, ResendsExactlyTheHolesOnceLaterPacketsAreDelivered) {
  ASSERT_EQ(seqs(send_write(1, 5, t0_)), (std::set<uint64_t>{0, 1, 2, 3, 4}));
  const uint64_t t1 = t0_ + 1 * kMs;
  ASSERT_EQ(seqs(send_write(2, 5, t1)), (std::set<uint64_t>{5, 6, 7, 8, 9}));
  std::vector<bool> got(10, true);
  got[1] = got[3] = false;
  const uint64_t t2 = t1 + 100 * kUs;
  a_.on_ack(ack_of(got, 9, t2), t2);
  EXPECT_EQ(seqs(pump(a_, t2)), (std::set<uint64_t>{1, 3}));
  EXPECT_EQ(retransmits(), 2u);
  auto done = completions(a_);  // the second write arrived whole; the first misses two packets
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].wr_id, 2u);
  EXPECT_TRUE(pump(a_, t2 + 10 * kUs).empty());  // each hole is resent once
  // The retransmissions arrive: the first write completes too.
  const uint64_t t3 = t2 + 100 * kUs;
  a_.on_ack(ack_of(std::vector<bool>(10, true), 3, t3), t3);
  done = completions(a_);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].wr_id, 1u);
  EXPECT_TRUE(done[0].ok);
  EXPECT_EQ(done[0].len, 5 * kChunk);
}

// Holes whose later packets were sent within the reordering window are only
// reordered, so far; once a packet sent well after them arrives, they are lost.
TEST_F(SenderScript, ReorderingWithinTheWindowIsNotLoss) {
  send_write(1, 5, t0_);
  send_write(2, 5, t0_ + 100 * kUs);  // within 250 us
  std::vector<bool> got(10, true);
  got[1] = got[3] = false;
  a_.on_ack(ack_of(got, 9, t0_ + 200 * kUs), t0_ + 200 * kUs);
  EXPECT_TRUE(pump(a_, t0_ + 200 * kUs).empty());
  EXPECT_EQ(retransmits(), 0u);
  const uint64_t late = t0_ + 2 * kMs;
  EXPECT_EQ(seqs(send_write(3, 1, late)), (std::set<uint64_t>{10}));
  got.push_back(true);
  a_.on_ack(ack_of(got, 10, late + 100 * kUs), late + 100 * kUs);
  EXPECT_EQ(seqs(pump(a_, late + 100 * kUs)), (std::set<uint64_t>{1, 3}));
}

// With no ack at all the timer fires after 5 ms (UCCL_RTO_MS, no RTT sample
// yet), then after 10, 20, 40, 80 ms, then every 100 ms (the cap: max(100 ms,
// 4 x 5 ms)); each fire resends one packet, the oldest. The ninth consecutive
// timeout (max_retries = 8) gives the peer up: every pending operation fails
// naming it, and a later one fails at once.
TEST_F(SenderScript, TimerBacksOffThenGivesUpAndFailsEveryPendingOperation) {
  std::vector<char> dst(50);
  // Two packets only: from the second timeout on the window is 2 packets (cubic),
  // and a timeout's probe goes out only while the window has room for it.
  EXPECT_EQ(seqs(send_write(1, 1, t0_)), (std::set<uint64_t>{0}));
  a_.submit(read_op(2, dst.data(), dst.size(), 1, 0));
  a_.take_submissions(t0_);
  EXPECT_EQ(seqs(pump(a_, t0_)), (std::set<uint64_t>{1}));
  const uint64_t expected_gaps_ms[] = {5, 10, 20, 40, 80, 100, 100, 100, 100};
  uint64_t last = t0_;
  for (size_t k = 0; k < std::size(expected_gaps_ms); ++k) {
    const uint64_t due = a_.next_deadline(last);
    ASSERT_EQ(due, last + expected_gaps_ms[k] * kMs) << "timeout " << k + 1;
    a_.on_timer(due - 1);
    ASSERT_EQ(timeouts(), k) << "fired early";
    ASSERT_TRUE(pump(a_, due - 1).empty());
    a_.on_timer(due);
    last = due;
    if (k + 1 < std::size(expected_gaps_ms)) {
      ASSERT_FALSE(a_.failed());
      ASSERT_EQ(timeouts(), k + 1);
      // the oldest transmission still unacknowledged: the write's packet, the read's, ...
      ASSERT_EQ(seqs(pump(a_, due)), (std::set<uint64_t>{k % 2})) << "timeout " << k + 1;
    }
  }
  ASSERT_TRUE(a_.failed());
  EXPECT_EQ(timeouts(), 8u);
  auto failed = completions(a_);
  ASSERT_EQ(failed.size(), 2u);
  for (const Completion& c : failed) {
    EXPECT_FALSE(c.ok);
    EXPECT_EQ(c.error_kind, ErrorKind::PeerFailure);
    EXPECT_NE(c.error.find("rank 1"), std::string::npos) << c.error;
    EXPECT_NE(c.error.find("8 consecutive"), std::string::npos) << c.error;
  }
  a_.submit(write_op(3, src_, 10, 1, 0));
  a_.take_submissions(last);
  auto later = completions(a_);
  ASSERT_EQ(later.size(), 1u);
  EXPECT_FALSE(later[0].ok);
  EXPECT_EQ(later[0].error_kind, ErrorKind::PeerFailure);
  EXPECT_TRUE(pump(a_, last).empty());
}

// A timeout's probe leaves even when the window has no room: from the second
// timeout on cubic's window is 2 packets while 7 are still counted in flight,
// and a probe that waited for room would never leave (each later timeout would
// only move the oldest packet, and a live peer would be given up).
TEST_F(SenderScript, TimeoutProbeLeavesWhenTheWindowIsFull) {
  ASSERT_EQ(send_write(1, 8, t0_).size(), 8u);
  a_.on_timer(t0_ + 5 * kMs);  // first timeout: probes packet 0, the window is left alone
  EXPECT_EQ(seqs(pump(a_, t0_ + 5 * kMs)), (std::set<uint64_t>{0}));
  a_.on_timer(t0_ + 15 * kMs);  // second: the window shrinks, packet 1 is the probe
  ASSERT_EQ(timeouts(), 2u);
  EXPECT_EQ(seqs(pump(a_, t0_ + 15 * kMs)), (std::set<uint64_t>{1}));
  a_.on_timer(t0_ + 35 * kMs);  // third: packet 2
  ASSERT_EQ(timeouts(), 3u);
  EXPECT_EQ(seqs(pump(a_, t0_ + 35 * kMs)), (std::set<uint64_t>{2}));
}

// Progress (an ack that releases a packet) ends the backoff: the next timeout
// is again one base RTO after the oldest packet still in flight was sent.
TEST_F(SenderScript, ProgressResetsTheBackoff) {
  send_write(1, 2, t0_);  // packets 0 and 1
  a_.on_timer(t0_ + 5 * kMs);       // resends 0
  pump(a_, t0_ + 5 * kMs);
  a_.on_timer(t0_ + 15 * kMs);      // resends 1
  pump(a_, t0_ + 15 * kMs);
  ASSERT_EQ(timeouts(), 2u);
  ASSERT_EQ(a_.next_deadline(t0_ + 15 * kMs), t0_ + 35 * kMs);  // backed off twice: 20 ms
  const uint64_t t = t0_ + 16 * kMs;
  a_.on_ack(ack_of({true, false}, 0, t), t);  // packet 0 arrives: progress
  // 1 was last sent at t0 + 15 ms; the base RTO is 5 ms (no RTT sample: 0 was resent, Karn)
  EXPECT_EQ(a_.next_deadline(t), t0_ + 20 * kMs);
}

}  // namespace
}  // namespace uccl::net::testing
