// A cross-process doorbell: producers ring it after publishing work, a consumer
// that has spun long enough sleeps on it (futex on shared memory, so no busy
// loop ever outlives its short spin on a two-core machine).
#pragma once
#include <atomic>
#include <cstdint>

namespace uccl {

struct alignas(64) Doorbell {
  std::atomic<uint32_t> seq{0};
  std::atomic<uint32_t> sleepers{0};

  // Producer side: cheap when nobody sleeps.
  void ring();
  // Consumer side: snapshot before the last check for work...
  uint32_t arm() {
    sleepers.fetch_add(1, std::memory_order_seq_cst);
    return seq.load(std::memory_order_seq_cst);
  }
  // ...then sleep until the sequence moves or timeout_ns passes.
  void sleep(uint32_t armed_seq, uint64_t timeout_ns);
  void disarm() { sleepers.fetch_sub(1, std::memory_order_seq_cst); }
};

}  // namespace uccl
