// A timing wheel (Carousel-style) for pacing: items are due at a time; the
// engine advances the wheel to "now" and gets the due items back in O(due).
// Items beyond the horizon sit in the farthest slot and are re-inserted when
// it comes round.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

namespace uccl::net {

class TimingWheel {
 public:
  TimingWheel(uint64_t slot_ns = 2000, size_t slots = 4096);
  void schedule(uint32_t id, uint64_t due_ns, uint64_t now_ns);
  // Fires every item due at or before now_ns (`fire` must not schedule).
  void advance(uint64_t now_ns, const std::function<void(uint32_t)>& fire);
  // Earliest time something may be due (0 when empty).
  uint64_t next_due() const;
  size_t size() const { return count_; }

 private:
  struct Item {
    uint32_t id;
    uint64_t due_ns;
  };
  uint64_t slot_ns_;
  std::vector<std::vector<Item>> slots_;
  uint64_t cursor_ = 0;  // absolute slot number processed up to (exclusive)
  size_t count_ = 0;
  uint64_t min_due_ = ~0ull;
};

}  // namespace uccl::net
