#include "transport/net/timing_wheel.h"

#include <algorithm>

namespace uccl::net {

TimingWheel::TimingWheel(uint64_t slot_ns, size_t slots) : slot_ns_(slot_ns), slots_(slots) {}

void TimingWheel::schedule(uint32_t id, uint64_t due_ns, uint64_t now_ns) {
  uint64_t slot = due_ns / slot_ns_;
  if (count_ == 0) cursor_ = now_ns / slot_ns_;
  slot = std::max(slot, cursor_);
  slot = std::min<uint64_t>(slot, cursor_ + slots_.size() - 1);  // beyond the horizon: revisit later
  slots_[slot % slots_.size()].push_back(Item{id, due_ns});
  ++count_;
  min_due_ = std::min(min_due_, due_ns);
}

void TimingWheel::advance(uint64_t now_ns, const std::function<void(uint32_t)>& fire) {
  uint64_t now_slot = now_ns / slot_ns_;
  if (count_ == 0) {
    cursor_ = now_slot + 1;
    return;
  }
  if (now_ns < min_due_) return;
  std::vector<Item> later;
  uint64_t steps = 0;
  for (; cursor_ <= now_slot && count_ > 0 && steps < slots_.size(); ++cursor_, ++steps) {
    auto& s = slots_[cursor_ % slots_.size()];
    for (const Item& it : s) {
      --count_;
      if (it.due_ns <= now_ns)
        fire(it.id);
      else
        later.push_back(it);
    }
    s.clear();
  }
  if (count_ == 0) cursor_ = now_slot + 1;
  for (const Item& it : later) {
    uint64_t slot = std::clamp<uint64_t>(it.due_ns / slot_ns_, cursor_, cursor_ + slots_.size() - 1);
    slots_[slot % slots_.size()].push_back(it);
    ++count_;
  }
  // The earliest item now sits in the first non-empty slot from the cursor.
  min_due_ = ~0ull;
  for (uint64_t k = 0; count_ && k < slots_.size() && min_due_ == ~0ull; ++k)
    for (const Item& it : slots_[(cursor_ + k) % slots_.size()]) min_due_ = std::min(min_due_, it.due_ns);
}

uint64_t TimingWheel::next_due() const { return count_ ? min_due_ : 0; }

}  // namespace uccl::net
