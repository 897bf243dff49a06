// The shared part of an endpoint's segment, handed out in blocks. Memory placed
// here is mapped by every peer on the host, so the shared-memory channel moves
// data into it with a plain memcpy instead of a cross-memory-attach system call
// (which pins pages and copies a page at a time): collectives put their inboxes here.
#pragma once
#include <cstdint>
#include <map>
#include <mutex>

namespace uccl {

class Arena {
 public:
  // Hands out [base, base + bytes).
  void init(char* base, uint64_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    base_ = base, bytes_ = bytes;
    free_.clear(), used_.clear();
    if (bytes) free_[0] = bytes;
  }

  // A block of `bytes` (64-byte aligned), or nullptr when the arena is full.
  void* alloc(uint64_t bytes) {
    bytes = (bytes + 63) / 64 * 64;
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = free_.begin(); it != free_.end(); ++it) {  // first fit
      if (it->second < bytes) continue;
      uint64_t off = it->first, rest = it->second - bytes;
      free_.erase(it);
      if (rest) free_[off + bytes] = rest;
      used_[off] = bytes;
      return base_ + off;
    }
    return nullptr;
  }

  // Returns a block; neighbouring free blocks merge.
  void release(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    auto used = used_.find(uint64_t(static_cast<char*>(p) - base_));
    if (used == used_.end()) return;
    uint64_t off = used->first, len = used->second;
    used_.erase(used);
    auto next = free_.find(off + len);
    if (next != free_.end()) len += next->second, free_.erase(next);
    auto prev = free_.lower_bound(off);
    if (prev != free_.begin() && (--prev)->first + prev->second == off) {
      prev->second += len;
      return;
    }
    free_[off] = len;
  }

  bool contains(const void* p) const {
    auto* c = static_cast<const char*>(p);
    return c >= base_ && c < base_ + bytes_;
  }

 private:
  char* base_ = nullptr;
  uint64_t bytes_ = 0;
  std::mutex mu_;
  std::map<uint64_t, uint64_t> free_, used_;  // offset -> length
};

}  // namespace uccl
