// The net channel's wire helpers: header decoding and its bounds, sequence-number
// widening across wrap-around, ack lengths and SACK bitmap realignment.
#include <gtest/gtest.h>

#include "transport/net/packet.h"

namespace uccl::net {
namespace {

DataWire data_wire(uint8_t op, uint8_t flags, uint32_t index, uint64_t total) {
  DataWire w{};
  w.op = op;
  w.flags = flags;
  w.index = index;
  w.total = total;
  return w;
}

TEST(DecodeData, FullPacketsSitAtTheirIndex) {
  DataHeader h;
  ASSERT_TRUE(decode_data(data_wire(kOpWrite, 0, 3, 10'000), 1000, &h));
  EXPECT_EQ(h.frag_off, 3000u);
  EXPECT_EQ(h.total, 10'000u);
}

TEST(DecodeData, LastPacketEndsTheOperation) {
  DataHeader h;
  ASSERT_TRUE(decode_data(data_wire(kOpWrite, kFlagLast, 9, 10'000), 400, &h));
  EXPECT_EQ(h.frag_off, 9600u);
}

TEST(DecodeData, RejectsLastPacketLongerThanTheOperation) {
  DataHeader h;
  EXPECT_FALSE(decode_data(data_wire(kOpWrite, kFlagLast, 0, 100), 101, &h));
}

TEST(DecodeData, RejectsEmptyPacketThatIsNotLast) {
  DataHeader h;
  EXPECT_FALSE(decode_data(data_wire(kOpWrite, 0, 0, 100), 0, &h));
}

TEST(DecodeData, RejectsNonLastPacketPastOrAtTheEnd) {
  DataHeader h;
  EXPECT_FALSE(decode_data(data_wire(kOpWrite, 0, 10, 10'000), 1000, &h));  // would end it: not flagged last
  EXPECT_FALSE(decode_data(data_wire(kOpWrite, 0, 11, 10'000), 1000, &h));  // past the end
  EXPECT_FALSE(decode_data(data_wire(kOpWrite, 0, 0xffffffffu, 10'000), 1000, &h));
}

TEST(DecodeData, KindsWithoutPayloadCarryTheirThirdOperand) {
  DataHeader h;
  ASSERT_TRUE(decode_data(data_wire(kOpReadReq, 0, 0, 4096), 0, &h));
  EXPECT_EQ(h.c, 4096u);
  EXPECT_EQ(h.total, 0u);
  EXPECT_FALSE(decode_data(data_wire(kOpError, 0, 0, 1), 8, &h));  // such a kind with payload
}

TEST(Widen32, FollowsTheReferenceAcrossWrapAround) {
  const uint64_t ref = (1ull << 32) - 5;  // just below a 32-bit wrap
  EXPECT_EQ(widen32(uint32_t(ref + 10), ref), ref + 10);
  EXPECT_EQ(widen32(uint32_t(ref - 10), ref), ref - 10);
  const uint64_t high = (7ull << 32) + 3;  // just above one
  EXPECT_EQ(widen32(uint32_t(high - 8), high), high - 8);
  EXPECT_EQ(widen32(uint32_t(high + (1u << 30)), high), high + (1u << 30));
}

TEST(Widen32, NeverGoesBelowZero) {
  EXPECT_EQ(widen32(0xfffffff0u, 5), 0u);
  EXPECT_EQ(widen32(3, 5), 3u);
}

TEST(AckLength, DropsTrailingZeroSackWords) {
  AckHeader a{};
  EXPECT_EQ(ack_length(a), offsetof(AckHeader, sack));
  a.sack[2] = 1;
  EXPECT_EQ(ack_length(a), offsetof(AckHeader, sack) + 3 * 8);
  a.sack[kSackWords - 1] = 1;
  EXPECT_EQ(ack_length(a), sizeof(AckHeader));
}

TEST(AckLength, AcceptsOnlyWholeWordsWithinTheHeader) {
  const size_t base = offsetof(AckHeader, sack);
  EXPECT_TRUE(ack_length_ok(base));
  EXPECT_TRUE(ack_length_ok(base + 8));
  EXPECT_TRUE(ack_length_ok(sizeof(AckHeader)));
  EXPECT_FALSE(ack_length_ok(base - 1));
  EXPECT_FALSE(ack_length_ok(base + 7));
  EXPECT_FALSE(ack_length_ok(sizeof(AckHeader) + 8));
}

TEST(BitsFrom, RealignsAcrossWordBoundaries) {
  std::array<uint64_t, kSackWords> w{};
  w[0] = 0xf000000000000000ull;
  w[1] = 0x5ull;
  EXPECT_EQ(bits_from(w, 0), w[0]);
  EXPECT_EQ(bits_from(w, 60), 0xfull | (0x5ull << 4));
  EXPECT_EQ(bits_from(w, 64), 0x5ull);
  EXPECT_EQ(bits_from(w, 64 * kSackWords), 0u);
  w[kSackWords - 1] = 1ull << 63;
  EXPECT_EQ(bits_from(w, 64 * kSackWords - 1), 1u);  // zeros past the end
}

TEST(ConnAuth, DependsOnSecretAndEveryConnectionField) {
  const uint32_t base = conn_auth(42, 1, 2, 7, 9);
  EXPECT_EQ(base, conn_auth(42, 1, 2, 7, 9));
  EXPECT_NE(base, conn_auth(43, 1, 2, 7, 9));
  EXPECT_NE(base, conn_auth(42, 2, 1, 7, 9));
  EXPECT_NE(base, conn_auth(42, 1, 2, 8, 9));
  EXPECT_NE(base, conn_auth(42, 1, 2, 7, 10));
}

}  // namespace
}  // namespace uccl::net
