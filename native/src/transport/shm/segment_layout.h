// Layout of an endpoint's shared segment: header (identity, doorbell), the
// region table, one incoming ring per peer rank, then the arena (arena.h).
#pragma once
#include <cstddef>
#include <atomic>
#include <cstdint>

#include "transport/shm/doorbell.h"
#include "transport/region_table.h"
#include "transport/shm/spsc_ring.h"

namespace uccl {

constexpr uint64_t kSegmentMagic = 0x55434c4c53484d31ull;  // "UCLLSHM1"

struct SegmentHeader {
  uint64_t magic;
  uint64_t secret;  // per-job secret from bootstrap: a peer verifies it mapped the right thing
  int32_t rank;
  int32_t world;
  int32_t pid;
  uint32_t table_capacity;
  uint64_t ring_bytes;
  uint64_t base_addr;     // where the owner mapped this segment: peers translate addresses in the arena
  uint64_t arena_offset;  // from the segment's start
  uint64_t arena_bytes;
  Doorbell bell;  // rung by anyone who leaves work for this endpoint
  std::atomic<uint32_t> closed;  // set when the owner closes its endpoint: it left, it did not die
};

struct SegmentLayout {
  int world;
  uint32_t table_capacity;
  uint64_t ring_bytes;
  uint64_t arena_bytes;

  static size_t align(size_t v, size_t a) { return (v + a - 1) / a * a; }
  size_t table_offset() const { return align(sizeof(SegmentHeader), 4096); }
  size_t ring_stride() const { return align(SpscRing::bytes_for(ring_bytes), 4096); }
  size_t ring_offset(int src) const {
    return align(table_offset() + RegionTable::bytes_for(table_capacity), 4096) + size_t(src) * ring_stride();
  }
  size_t arena_offset() const { return ring_offset(world); }
  size_t total() const { return arena_offset() + align(arena_bytes, 4096); }
};

}  // namespace uccl
