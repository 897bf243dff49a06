// Registered memory regions, kept in the owner's shared segment so that
// same-host peers validate key, bounds and access flags before touching memory.
// One writer (the owner, under its own lock); readers use a seqlock.
#pragma once
#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "generated/setting_defaults.h"

namespace uccl {

enum Access : uint32_t { kRemoteWrite = 1u << 0, kRemoteRead = 1u << 1 };

struct Region {
  uint64_t key;
  uint64_t addr;
  uint64_t len;
  uint32_t flags;
};

// Every field is atomic (accessed relaxed; the sequence orders them) so that a
// reader racing the owner's update reads a stale value rather than racing in the
// C++ sense; on x86-64 the code is the same as for plain fields.
struct alignas(32) RegionSlot {
  std::atomic<uint32_t> seq;  // odd while the owner is changing the slot
  std::atomic<uint32_t> flags;
  std::atomic<uint64_t> key;  // 0 = free
  std::atomic<uint64_t> addr;
  std::atomic<uint64_t> len;
};
static_assert(sizeof(RegionSlot) == 32, "the slot layout is shared between processes");

// A view of a table living in shared memory; the owner also keeps the free list.
class RegionTable {
 public:
  static size_t bytes_for(uint32_t capacity) { return sizeof(RegionSlot) * capacity; }

  RegionTable() = default;
  // `name` says whose table this is in errors ("rank 3's region table");
  // `stall_timeout_s` bounds how long lookup waits on a slot left mid-update.
  RegionTable(void* mem, uint32_t capacity, bool owner, std::string name = "this process's region table",
              double stall_timeout_s = defaults::timeout);

  // Owner only.
  uint64_t add(uint64_t addr, uint64_t len, uint32_t flags);
  bool remove(uint64_t key);

  // Anyone: a consistent snapshot of the slot named by key, if it still holds key.
  // A slot that stays mid-update past the stall bound (its owner died between the
  // two sequence bumps) raises PeerFailure naming the key and this table.
  std::optional<Region> lookup(uint64_t key) const;
  uint32_t capacity() const { return capacity_; }

 private:
  // One seqlock read attempt: true with *out filled when the slot was stable.
  static bool read_stable(const RegionSlot& s, Region* out);
  // After the spins of the fast path: waits against a deadline, yielding the CPU.
  std::optional<Region> lookup_stalled(uint64_t key) const;

  RegionSlot* slots_ = nullptr;
  uint32_t capacity_ = 0;
  std::mutex mu_;
  std::vector<uint32_t> free_;
  std::mt19937_64 rng_;
  std::string name_;
  double stall_timeout_s_ = defaults::timeout;
};

}  // namespace uccl
