// Refusals between two flows without sockets: access checks, and the writer's
// hold rule when the ack reporting a refusal overtakes the error packet.
#include <gtest/gtest.h>

#include <cstring>

#include "flow_harness.h"
#include "transport/net/flow/refusal.h"

namespace uccl::net::testing {
namespace {

TEST(CheckAccess, NamesTheFirstReasonToRefuse) {
  const Region r{7, 0x1000, 64, kRemoteWrite};
  EXPECT_EQ(check_access(std::nullopt, kRemoteWrite, 0, 1), uint64_t(kErrNoKey));
  EXPECT_EQ(check_access(r, kRemoteRead, 0, 1), uint64_t(kErrNoReadAccess));
  EXPECT_EQ(check_access(Region{7, 0x1000, 64, kRemoteRead}, kRemoteWrite, 0, 1), uint64_t(kErrNoWriteAccess));
  EXPECT_EQ(check_access(r, kRemoteWrite, 0, 64), 0u);
  EXPECT_EQ(check_access(r, kRemoteWrite, 64, 0), 0u);
  EXPECT_EQ(check_access(r, kRemoteWrite, 0, 65), uint64_t(kErrBounds));
  EXPECT_EQ(check_access(r, kRemoteWrite, 65, 0), uint64_t(kErrBounds));
  EXPECT_EQ(check_access(r, kRemoteWrite, 8, ~0ull), uint64_t(kErrBounds));  // no wrap-around past the end
}

TEST(WriteHold, HoldsWhileThePeerReportsMoreRefusalsThanHaveArrived) {
  WriteHold hold;
  EXPECT_FALSE(hold.refusal_pending());
  hold.on_peer_refusals(2);
  EXPECT_TRUE(hold.refusal_pending());
  hold.on_error_packet();
  EXPECT_TRUE(hold.refusal_pending());
  hold.on_peer_refusals(1);  // an older ack, reordered: counts never go back
  hold.on_error_packet();
  EXPECT_FALSE(hold.refusal_pending());
}

// Rank 0 (A) reads and writes rank 1's (B's) region of 64 bytes.
class RefusalFlows : public ::testing::Test {
 protected:
  RefusalFlows() : a_(params(0, 1), regions_a_.table()), b_(params(1, 0), regions_b_.table()) {
    key_ = regions_b_.add(region_, sizeof(region_), kRemoteWrite | kRemoteRead);
  }

  // A's operation reaches B; B's ack and answers come back, the ack first.
  // Returns the completions A has after the ack alone and after the answers too.
  std::pair<std::vector<Completion>, std::vector<Completion>> run(std::unique_ptr<TxOp> op) {
    a_.submit(std::move(op));
    a_.take_submissions(t_);
    for (const Packet& p : pump(a_, t_)) deliver(b_, p, t_);
    b_.take_submissions(t_);
    t_ += 10 * kUs;
    const auto b_ack = ack(b_, t_);
    EXPECT_TRUE(b_ack.has_value());
    const std::vector<Packet> answers = pump(b_, t_);
    rejects_ = b_ack->rejects;
    error_packets_ += answers.size();
    a_.on_ack(*b_ack, t_);
    auto after_ack = completions(a_);
    for (const Packet& p : answers) deliver(a_, p, t_);
    auto after_answers = completions(a_);
    t_ += 10 * kUs;
    return {after_ack, after_answers};
  }

  Regions regions_a_, regions_b_;
  Flow a_, b_;
  char region_[64] = {};
  uint64_t key_ = 0;
  uint64_t t_ = now_ns();
  uint64_t rejects_ = 0, error_packets_ = 0;
  char src_[200] = {};
  char dst_[200] = {};
};

TEST_F(RefusalFlows, ReadPastTheEndFailsWithAccessError) {
  auto [after_ack, after_answers] = run(read_op(1, dst_, 65, key_, 0));
  EXPECT_TRUE(after_ack.empty());  // a read waits for its answer
  ASSERT_EQ(after_answers.size(), 1u);
  EXPECT_FALSE(after_answers[0].ok);
  EXPECT_EQ(after_answers[0].error_kind, ErrorKind::Access);
  EXPECT_NE(after_answers[0].error.find("outside"), std::string::npos) << after_answers[0].error;
}

// The acks' count and the error packets count the same thing: a refused read too.
TEST_F(RefusalFlows, AcksCountRefusedReadsLikeTheErrorPacketsTheyAnnounce) {
  run(read_op(1, dst_, 65, key_, 0));
  EXPECT_EQ(error_packets_, 1u);
  EXPECT_EQ(rejects_, 1u);
}

// The regression (issue 17): after a refused read, a refused write whose ack
// overtakes its error packet completed as a success.
TEST_F(RefusalFlows, RefusedWriteAfterRefusedReadFailsEvenWhenTheAckOvertakesTheError) {
  run(read_op(1, dst_, 65, key_, 0));
  std::memset(src_, 2, sizeof(src_));
  auto [after_ack, after_answers] = run(write_op(2, src_, 65, key_, 0));
  EXPECT_TRUE(after_ack.empty()) << "the write completed (ok=" << after_ack[0].ok
                                 << ") before its refusal arrived";
  ASSERT_EQ(after_answers.size(), 1u);
  EXPECT_EQ(after_answers[0].wr_id, 2u);
  EXPECT_FALSE(after_answers[0].ok);
  EXPECT_EQ(after_answers[0].error_kind, ErrorKind::Access);
  // The flow still works: an in-bounds write completes, and lands.
  std::memset(src_, 7, sizeof(src_));
  auto [ok_after_ack, nothing_more] = run(write_op(3, src_, 64, key_, 0));
  ASSERT_EQ(ok_after_ack.size(), 1u);
  EXPECT_TRUE(ok_after_ack[0].ok) << ok_after_ack[0].error;
  EXPECT_TRUE(nothing_more.empty());
  for (char c : region_) ASSERT_EQ(c, 7);
}

TEST_F(RefusalFlows, ManyRefusedReadsThenARefusedWrite) {
  for (int i = 0; i < 3; ++i) run(read_op(10 + uint64_t(i), dst_, 8, key_, 60));
  auto [after_ack, after_answers] = run(write_op(20, src_, 1, key_, 64));
  EXPECT_TRUE(after_ack.empty());
  ASSERT_EQ(after_answers.size(), 1u);
  EXPECT_FALSE(after_answers[0].ok);
  EXPECT_EQ(rejects_, 4u);
  EXPECT_EQ(error_packets_, 4u);
}

}  // namespace
}  // namespace uccl::net::testing
