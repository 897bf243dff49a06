// Monotonic time and the CPU pause hint used by short spin loops.
#pragma once
#include <cstdint>
#include <ctime>

namespace uccl {

inline uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// A wait deadline; timeout_ns == 0 means "check once".
struct Deadline {
  uint64_t end_ns;
  explicit Deadline(double timeout_s) : end_ns(now_ns() + uint64_t(timeout_s * 1e9)) {}
  bool expired() const { return now_ns() >= end_ns; }
  uint64_t remaining_ns() const {
    uint64_t t = now_ns();
    return t >= end_ns ? 0 : end_ns - t;
  }
};

}  // namespace uccl
