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

struct alignas(32) RegionSlot {
  std::atomic<uint32_t> seq;  // odd while the owner is changing the slot
  uint32_t flags;
  std::atomic<uint64_t> key;  // 0 = free
  uint64_t addr;
  uint64_t len;
};

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
  std::optional<Region> lookup(uint64_t key) const;
  uint32_t capacity() const { return capacity_; }

 private:
  RegionSlot* slots_ = nullptr;
  uint32_t capacity_ = 0;
  std::mutex mu_;
  std::vector<uint32_t> free_;
  std::mt19937_64 rng_;
  std::string name_;
  double stall_timeout_s_ = defaults::timeout;
};

}  // namespace uccl
