// A single-producer single-consumer ring of variable-size records in shared
// memory. Records are 64-byte aligned; a record never wraps (a pad fills the end).
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace uccl {

struct alignas(64) RecordHeader {
  uint32_t type;     // 0 = pad
  uint32_t payload;  // payload bytes following the 64-byte header
  uint64_t a, b, c, d, e;
};
static_assert(sizeof(RecordHeader) == 64, "record header is one cache line");

struct RingControl {
  alignas(64) std::atomic<uint64_t> head;  // written by the producer
  alignas(64) std::atomic<uint64_t> tail;  // written by the consumer
};

class SpscRing {
 public:
  static constexpr uint32_t kPad = 0;
  static size_t bytes_for(size_t capacity) { return sizeof(RingControl) + capacity; }
  static size_t record_bytes(size_t payload) { return sizeof(RecordHeader) + ((payload + 63) & ~size_t(63)); }

  SpscRing() = default;
  SpscRing(void* mem, size_t capacity)
      : ctl_(static_cast<RingControl*>(mem)),
        data_(static_cast<char*>(mem) + sizeof(RingControl)),
        cap_(capacity) {}

  size_t capacity() const { return cap_; }
  size_t max_payload() const { return cap_ / 4 - sizeof(RecordHeader); }

  // Producer: room for a record with `payload` bytes, or nullptr if full now.
  RecordHeader* reserve(size_t payload) {
    size_t need = record_bytes(payload);
    uint64_t head = ctl_->head.load(std::memory_order_relaxed);
    uint64_t tail = ctl_->tail.load(std::memory_order_acquire);
    size_t pos = head & (cap_ - 1);
    size_t to_end = cap_ - pos;
    size_t pad = need > to_end ? to_end : 0;
    if (head + pad + need - tail > cap_) return nullptr;
    if (pad) {
      auto* p = reinterpret_cast<RecordHeader*>(data_ + pos);
      p->type = kPad;
      p->payload = uint32_t(pad - sizeof(RecordHeader));
      head += pad;
      ctl_->head.store(head, std::memory_order_release);
      pos = 0;
    }
    return reinterpret_cast<RecordHeader*>(data_ + pos);
  }
  void commit(const RecordHeader* rec) {
    uint64_t head = ctl_->head.load(std::memory_order_relaxed);
    ctl_->head.store(head + record_bytes(rec->payload), std::memory_order_release);
  }

  // Consumer: the oldest record, or nullptr if empty. Pads are skipped.
  RecordHeader* peek() {
    for (;;) {
      uint64_t tail = ctl_->tail.load(std::memory_order_relaxed);
      if (tail == ctl_->head.load(std::memory_order_acquire)) return nullptr;
      auto* r = reinterpret_cast<RecordHeader*>(data_ + (tail & (cap_ - 1)));
      if (r->type != kPad) return r;
      ctl_->tail.store(tail + sizeof(RecordHeader) + r->payload, std::memory_order_release);
    }
  }
  void pop(const RecordHeader* rec) {
    uint64_t tail = ctl_->tail.load(std::memory_order_relaxed);
    ctl_->tail.store(tail + record_bytes(rec->payload), std::memory_order_release);
  }
  bool empty() const {
    return ctl_->tail.load(std::memory_order_relaxed) == ctl_->head.load(std::memory_order_acquire);
  }

 private:
  RingControl* ctl_ = nullptr;
  char* data_ = nullptr;
  size_t cap_ = 0;
};

}  // namespace uccl
