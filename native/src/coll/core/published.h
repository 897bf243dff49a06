// Results a rank publishes in its shared arena for the peers on its host to copy
// out themselves. The owner folds each finished chunk straight into a slot there
// and bumps its channel's progress counter; each peer loads the chunk through its
// mapping of the arena (from cache: the slots are few and reused), streams it into
// its own output and bumps its consumption counter, which frees the slot. That
// replaces a cross-memory write into every peer, which pins pages and copies
// through the kernel at a fraction of memory speed.
//
// Layout, for C owner channels, W ranks, S slots per channel:
//   C progress lines (chunks done by channel k, in its order: chunks k, k + C, ...),
//   C x W consumption lines (chunks of channel k that rank r has copied out),
//   C x S slots of one chunk each.
#pragma once
#include <atomic>
#include <cstdint>
#include <vector>

#include "coll/core/context.h"
#include "coll/core/windows.h"

namespace uccl {

constexpr uint64_t kLine = 64;
constexpr int kPublishedSlots = 4;

struct PublishedShape {
  uint64_t chunk;
  int channels, world, slots;
  uint64_t header() const { return kLine * uint64_t(channels) * uint64_t(1 + world); }
  uint64_t bytes() const { return header() + uint64_t(channels) * uint64_t(slots) * chunk; }
  uint64_t progress_at(int k) const { return kLine * uint64_t(k); }
  uint64_t consumed_at(int k, int rank) const { return kLine * (uint64_t(channels) + uint64_t(k) * uint64_t(world) + uint64_t(rank)); }
  uint64_t slot_at(int k, uint64_t n) const { return header() + (uint64_t(k) * uint64_t(slots) + n % uint64_t(slots)) * chunk; }
};

inline std::atomic<uint64_t>& counter_at(char* base, uint64_t off) {
  return *reinterpret_cast<std::atomic<uint64_t>*>(base + off);
}

// The owner's side.
class PublishedBlock {
 public:
  PublishedBlock(char* base, const PublishedShape& shape, int rank) : base_(base), shape_(shape), rank_(rank) {}
  // Before the window is granted: peers learn of it only after these stores.
  void reset();
  // Where the n-th chunk of channel ch goes; free once every peer copied chunk n - slots.
  char* slot(int ch, uint64_t n) const { return base_ + shape_.slot_at(ch, n); }
  bool slot_free(int ch, uint64_t n) const;
  // Channel ch has finished `chunks` chunks: their bytes are visible before the count.
  void publish(int ch, uint64_t chunks) { counter_at(base_, shape_.progress_at(ch)).store(chunks, std::memory_order_release); }

 private:
  char* base_;
  PublishedShape shape_;
  int rank_;
};

// A peer's published block as this rank sees it (mapped), copied into `dst`.
class PeerBlock {
 public:
  PeerBlock(int peer, char* base, const PublishedShape& shape, uint64_t len, char* dst, int rank)
      : peer_(peer), base_(base), shape_(shape), len_(len), dst_(dst), rank_(rank) {}
  int peer() const { return peer_; }
  int channels() const { return shape_.channels; }
  // How many chunks the owner's channel k makes.
  uint64_t chunks_of(int k) const;
  bool ready(int k, uint64_t n) const {
    return counter_at(base_, shape_.progress_at(k)).load(std::memory_order_acquire) > n;
  }
  // Copies chunk n of channel k out (it must be ready), then frees its slot.
  void take(int k, uint64_t n, uint64_t out_bytes) const;

 private:
  int peer_;
  char* base_;
  PublishedShape shape_;
  uint64_t len_;
  char* dst_;
  int rank_;
};

// The chunks one of this rank's `channels` channels (`ch`) copies out: all of owner
// channel k, for every k with k % channels == ch, in order (so each consumption
// counter has one writer).
class PeerPulls {
 public:
  PeerPulls(CollContext& c, const std::vector<PeerBlock>& blocks, int ch, uint64_t out_bytes);
  // Copies what is ready without waiting; true if anything was.
  bool take_ready();
  // Waits, copying, until `done()` holds (bounded by the timeout; a dead peer fails it).
  template <typename Done>
  void wait_until(Done&& done, const char* what) {
    take_ready();
    if (done()) return;
    c_.ep.wait_until([&] { return take_ready(), done(); }, c_.ep.config().timeout_s,
                     OpDesc{Opcode::Read, kAnySource, 0, what, true});
  }
  bool finished() const;

 private:
  CollContext& c_;
  const std::vector<PeerBlock>& blocks_;
  int ch_;
  uint64_t out_bytes_;
  std::vector<std::vector<uint64_t>> next_;  // [block][owner channel]: the next chunk to copy
};

}  // namespace uccl
