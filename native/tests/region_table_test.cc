// The region table's seqlock: lookups see whole registrations while the owner
// changes them, and give up (with an error naming the key and the table) on a
// slot its owner left mid-update, as a process killed while registering does.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "common/errors.h"
#include "transport/region_table.h"

namespace uccl {
namespace {

constexpr uint32_t kCapacity = 8;

uint32_t slot_of(uint64_t key) { return uint32_t(key & 0xffffffffu); }

std::string hex(uint64_t v) {
  std::ostringstream os;
  os << std::hex << v;
  return os.str();
}

TEST(RegionTableLookup, FindsWhatWasAddedAndNotWhatWasRemoved) {
  std::unique_ptr<RegionSlot[]> slots(new RegionSlot[kCapacity]());
  RegionTable owner(slots.get(), kCapacity, true);
  RegionTable view(slots.get(), kCapacity, false, "rank 1's region table", 1.0);
  const uint64_t key = owner.add(0x1000, 64, kRemoteWrite);
  const auto r = view.lookup(key);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->addr, 0x1000u);
  EXPECT_EQ(r->len, 64u);
  EXPECT_EQ(r->flags, uint32_t(kRemoteWrite));
  EXPECT_FALSE(view.lookup(key ^ (1ull << 40)).has_value());  // same slot, another tag
  EXPECT_TRUE(owner.remove(key));
  EXPECT_FALSE(view.lookup(key).has_value());
  EXPECT_FALSE(view.lookup(0).has_value());
  EXPECT_FALSE(view.lookup(kCapacity).has_value());  // slot index past the table
}

// A writer that died between its two sequence increments leaves the slot odd
// forever. The lookup must end with an error within the table's stall bound;
// if it is still spinning long after, the test un-sticks it and fails.
TEST(RegionTableLookup, GivesUpOnASlotLeftMidUpdateAndNamesKeyAndTable) {
  std::unique_ptr<RegionSlot[]> slots(new RegionSlot[kCapacity]());
  RegionTable owner(slots.get(), kCapacity, true);
  RegionTable view(slots.get(), kCapacity, false, "rank 1's region table", 0.2);
  const uint64_t key = owner.add(0x1000, 64, kRemoteWrite);
  std::atomic<uint32_t>& seq = slots[slot_of(key)].seq;
  seq.fetch_add(1);  // the dead writer's first increment; the second never comes

  std::promise<std::string> outcome;
  std::future<std::string> result = outcome.get_future();
  std::thread reader([&] {
    try {
      view.lookup(key);
      outcome.set_value("lookup returned");
    } catch (const Error& e) {
      outcome.set_value(std::string("Error(") + std::to_string(int(e.kind())) + "): " + e.what());
    }
  });
  const bool ended = result.wait_for(std::chrono::seconds(30)) == std::future_status::ready;
  if (!ended) seq.fetch_add(1);  // let a lookup that never gives up finish, so the thread joins
  reader.join();
  ASSERT_TRUE(ended) << "lookup of a slot left mid-update was still spinning after 30 s";
  const std::string what = result.get();
  EXPECT_NE(what.find("Error(" + std::to_string(int(ErrorKind::PeerFailure)) + ")"), std::string::npos) << what;
  EXPECT_NE(what.find("rank 1's region table"), std::string::npos) << what;
  EXPECT_NE(what.find(hex(key)), std::string::npos) << what;
}

// A slot that is mid-update only briefly (a writer preempted, not dead) is
// waited for: the lookup then sees the finished registration.
TEST(RegionTableLookup, WaitsOutAWriterThatFinishes) {
  std::unique_ptr<RegionSlot[]> slots(new RegionSlot[kCapacity]());
  RegionTable owner(slots.get(), kCapacity, true);
  RegionTable view(slots.get(), kCapacity, false, "rank 1's region table", 60.0);
  const uint64_t key = owner.add(0x1000, 64, kRemoteWrite);
  std::atomic<uint32_t>& seq = slots[slot_of(key)].seq;
  seq.fetch_add(1);
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    seq.fetch_add(1);
  });
  const auto r = view.lookup(key);
  writer.join();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->len, 64u);
}

// Readers racing the owner's add/remove see either no region or a whole one
// (the address and length written together), never a mix of two registrations.
TEST(RegionTableLookup, ConcurrentReadersSeeWholeRegistrations) {
  std::unique_ptr<RegionSlot[]> slots(new RegionSlot[kCapacity]());
  RegionTable owner(slots.get(), kCapacity, true);
  RegionTable view(slots.get(), kCapacity, false, "rank 1's region table", 60.0);
  std::atomic<uint64_t> latest{0};
  std::atomic<bool> reading{false}, stop{false};
  std::thread writer([&] {
    while (!reading.load()) std::this_thread::yield();
    for (uint64_t i = 1; i <= 200000; ++i) {
      const uint64_t key = owner.add(i << 12, i, kRemoteWrite);  // len i goes with addr i << 12
      latest.store(key, std::memory_order_release);
      owner.remove(key);
    }
    stop.store(true);
  });
  uint64_t seen = 0, torn = 0;
  reading.store(true);
  while (!stop.load()) {
    const uint64_t key = latest.load(std::memory_order_acquire);
    if (key == 0) continue;
    if (const auto r = view.lookup(key)) {
      ++seen;
      if (r->addr != r->len << 12 || r->key != key) ++torn;
    }
  }
  writer.join();
  EXPECT_EQ(torn, 0u) << "of " << seen << " regions seen";
}

}  // namespace
}  // namespace uccl
