#include "transport/region_table.h"

#include <chrono>
#include <thread>

#include "common/errors.h"

namespace uccl {

RegionTable::RegionTable(void* mem, uint32_t capacity, bool owner, std::string name, double stall_timeout_s)
    : slots_(static_cast<RegionSlot*>(mem)),
      capacity_(capacity),
      rng_(std::random_device{}()),
      name_(std::move(name)),
      stall_timeout_s_(stall_timeout_s) {
  if (!owner) return;
  free_.reserve(capacity);
  for (uint32_t i = capacity; i > 0; --i) free_.push_back(i - 1);
}

uint64_t RegionTable::add(uint64_t addr, uint64_t len, uint32_t flags) {
  std::lock_guard<std::mutex> lock(mu_);
  if (free_.empty()) raise(ErrorKind::Argument, "region table full (", capacity_, " regions registered); raise UCCL_MAX_REGIONS");
  uint32_t idx = free_.back();
  free_.pop_back();
  // High half random: a stale or guessed key does not name a live region.
  uint64_t tag = 0;
  while (tag == 0) tag = rng_() & 0xffffffffull;
  uint64_t key = (tag << 32) | idx;
  RegionSlot& s = slots_[idx];
  s.seq.fetch_add(1, std::memory_order_acq_rel);
  s.flags.store(flags, std::memory_order_relaxed);
  s.addr.store(addr, std::memory_order_relaxed);
  s.len.store(len, std::memory_order_relaxed);
  s.key.store(key, std::memory_order_relaxed);
  s.seq.fetch_add(1, std::memory_order_release);
  return key;
}

bool RegionTable::remove(uint64_t key) {
  std::lock_guard<std::mutex> lock(mu_);
  uint32_t idx = uint32_t(key & 0xffffffffu);
  if (idx >= capacity_) return false;
  RegionSlot& s = slots_[idx];
  if (s.key.load(std::memory_order_relaxed) != key) return false;
  s.seq.fetch_add(1, std::memory_order_acq_rel);
  s.key.store(0, std::memory_order_relaxed);
  s.addr.store(0, std::memory_order_relaxed);
  s.len.store(0, std::memory_order_relaxed);
  s.flags.store(0, std::memory_order_relaxed);
  s.seq.fetch_add(1, std::memory_order_release);
  free_.push_back(idx);
  return true;
}

bool RegionTable::read_stable(const RegionSlot& s, Region* out) {
  const uint32_t before = s.seq.load(std::memory_order_acquire);
  if (before & 1u) return false;
  *out = Region{s.key.load(std::memory_order_relaxed), s.addr.load(std::memory_order_relaxed),
                s.len.load(std::memory_order_relaxed), s.flags.load(std::memory_order_relaxed)};
  std::atomic_thread_fence(std::memory_order_acquire);
  return s.seq.load(std::memory_order_relaxed) == before;
}

std::optional<Region> RegionTable::lookup(uint64_t key) const {
  // Spins before the clock is consulted: a live writer holds a slot for a few stores.
  constexpr uint32_t kSpinsBeforeDeadline = 1u << 12;
  const uint32_t idx = uint32_t(key & 0xffffffffu);
  if (key == 0 || idx >= capacity_) return std::nullopt;
  const RegionSlot& s = slots_[idx];
  Region r;
  for (uint32_t spin = 0; spin < kSpinsBeforeDeadline; ++spin) {
    if (!read_stable(s, &r)) continue;
    if (r.key != key) return std::nullopt;
    return r;
  }
  return lookup_stalled(key);
}

std::optional<Region> RegionTable::lookup_stalled(uint64_t key) const {
  const uint32_t idx = uint32_t(key & 0xffffffffu);
  const RegionSlot& s = slots_[idx];
  const auto start = std::chrono::steady_clock::now();
  const auto limit = std::chrono::duration<double>(stall_timeout_s_);
  Region r;
  while (!read_stable(s, &r)) {
    if (std::chrono::steady_clock::now() - start >= limit)
      raise(ErrorKind::PeerFailure, "region key 0x", std::hex, key, std::dec, ": slot ", idx, " of ", name_,
            " stayed mid-update (sequence ", s.seq.load(std::memory_order_relaxed), ") for ", stall_timeout_s_,
            " s; its owner died or stalled while registering or deregistering a region");
    std::this_thread::yield();
  }
  if (r.key != key) return std::nullopt;
  return r;
}

}  // namespace uccl
