// The SACK bitmap helpers checked against a plain bit-by-bit reference: bits_from
// at every offset of random bitmaps, and ack_length for every last non-zero word.
#include <gtest/gtest.h>

#include <random>

#include "transport/net/packet.h"

namespace uccl::net {
namespace {

using Bitmap = std::array<uint64_t, kSackWords>;

bool bit(const Bitmap& w, uint64_t i) { return i < 64 * kSackWords && ((w[i / 64] >> (i % 64)) & 1); }

Bitmap random_bitmap(std::mt19937_64& rng, double density) {
  std::bernoulli_distribution on(density);
  Bitmap w{};
  for (uint64_t i = 0; i < 64 * kSackWords; ++i)
    if (on(rng)) w[i / 64] |= 1ull << (i % 64);
  return w;
}

TEST(BitsFrom, MatchesBitByBitReferenceAtEveryOffset) {
  std::mt19937_64 rng(17);
  for (double density : {0.02, 0.5, 0.98}) {
    const Bitmap w = random_bitmap(rng, density);
    for (uint64_t off = 0; off <= 64 * kSackWords + 64; ++off) {
      uint64_t expect = 0;
      for (uint64_t i = 0; i < 64; ++i)
        if (bit(w, off + i)) expect |= 1ull << i;
      ASSERT_EQ(bits_from(w, off), expect) << "offset " << off << " density " << density;
    }
  }
}

TEST(BitsFrom, AllOnesEndWithZerosPastTheWindow) {
  Bitmap w;
  w.fill(~0ull);
  EXPECT_EQ(bits_from(w, 64 * kSackWords - 64), ~0ull);
  EXPECT_EQ(bits_from(w, 64 * kSackWords - 10), (1ull << 10) - 1);
  EXPECT_EQ(bits_from(w, ~0ull - 5), 0u);  // far beyond: no overflow into the window
}

TEST(AckLength, EndsAtTheLastNonZeroWordWhicheverItIs) {
  for (size_t last = 0; last < kSackWords; ++last) {
    AckHeader a{};
    a.sack[0] = 1;  // words before the last one may be anything
    a.sack[last] = 1ull << (last % 64);
    const size_t len = ack_length(a);
    EXPECT_EQ(len, offsetof(AckHeader, sack) + 8 * (last + 1));
    EXPECT_TRUE(ack_length_ok(len));
  }
}

}  // namespace
}  // namespace uccl::net
