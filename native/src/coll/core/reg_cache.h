// Recently used call buffers stay registered (local access only), so a training
// loop that reuses its tensors pays no registration per call. Safe because a
// local-only region is never exposed to peers: a stale entry for the same
// address range still describes exactly the memory the caller passes. Thread-safe: a
// pipelined hierarchical call registers its pieces from two threads; the capacity covers
// every sub-buffer one call uses, so none is evicted under the call.
#pragma once
#include <cstdint>
#include <mutex>
#include <vector>

#include "transport/endpoint.h"

namespace uccl {

class RegCache {
 public:
  explicit RegCache(Endpoint& ep, size_t capacity = 64) : ep_(ep), entries_(capacity) {}
  ~RegCache() {
    for (auto& e : entries_)
      if (e.key) {
        try {
          ep_.deregister_region(e.key);
        } catch (...) {
        }
      }
  }
  // Least recently used goes first, so the buffers of the call in progress (the
  // most recent uses) are never evicted under it.
  uint64_t key(uint64_t addr, uint64_t len) {
    std::lock_guard<std::mutex> lock(mu_);
    ++clock_;
    Entry* victim = &entries_[0];
    for (auto& e : entries_) {
      if (e.key && e.addr == addr && e.len == len) {
        e.last_use = clock_;
        return e.key;
      }
      if (e.last_use < victim->last_use) victim = &e;
    }
    if (victim->key) ep_.deregister_region(victim->key);
    *victim = Entry{addr, len, ep_.register_region(addr, len, 0), clock_};
    return victim->key;
  }

 private:
  struct Entry {
    uint64_t addr = 0, len = 0, key = 0, last_use = 0;
  };
  Endpoint& ep_;
  std::vector<Entry> entries_;
  uint64_t clock_ = 0;
  std::mutex mu_;
};

}  // namespace uccl
