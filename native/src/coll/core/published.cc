#include "coll/core/published.h"

#include "common/stream_copy.h"

namespace uccl {

void PublishedBlock::reset() {
  for (int k = 0; k < shape_.channels; ++k) {
    counter_at(base_, shape_.progress_at(k)).store(0, std::memory_order_relaxed);
    for (int r = 0; r < shape_.world; ++r) counter_at(base_, shape_.consumed_at(k, r)).store(0, std::memory_order_relaxed);
  }
}

bool PublishedBlock::slot_free(int ch, uint64_t n) const {
  if (n < uint64_t(shape_.slots)) return true;
  const uint64_t need = n + 1 - uint64_t(shape_.slots);
  for (int r = 0; r < shape_.world; ++r)
    if (r != rank_ && counter_at(base_, shape_.consumed_at(ch, r)).load(std::memory_order_acquire) < need)
      return false;
  return true;
}

uint64_t PeerBlock::chunks_of(int k) const {
  const uint64_t total = (len_ + shape_.chunk - 1) / shape_.chunk, C = uint64_t(shape_.channels);
  return total > uint64_t(k) ? (total - uint64_t(k) + C - 1) / C : 0;
}

void PeerBlock::take(int k, uint64_t n, uint64_t out_bytes) const {
  const uint64_t o = (n * uint64_t(shape_.channels) + uint64_t(k)) * shape_.chunk;
  copy_out(dst_ + o, base_ + shape_.slot_at(k, n), len_ - o < shape_.chunk ? len_ - o : shape_.chunk, out_bytes);
  counter_at(base_, shape_.consumed_at(k, rank_)).store(n + 1, std::memory_order_release);
}

PeerPulls::PeerPulls(CollContext& c, const std::vector<PeerBlock>& blocks, int ch, uint64_t out_bytes)
    : c_(c), blocks_(blocks), ch_(ch), out_bytes_(out_bytes), next_(blocks.size()) {
  for (size_t b = 0; b < blocks.size(); ++b) next_[b].assign(size_t(blocks[b].channels()), 0);
}

bool PeerPulls::take_ready() {
  bool any = false;
  for (size_t b = 0; b < blocks_.size(); ++b) {
    const PeerBlock& blk = blocks_[b];
    bool took = false;
    for (int k = ch_; k < blk.channels(); k += c_.channels) {
      uint64_t& n = next_[b][size_t(k)];
      while (n < blk.chunks_of(k) && blk.ready(k, n)) blk.take(k, n++, out_bytes_), took = true;
    }
    if (took) c_.ep.wake(blk.peer());  // its owner may wait for a free slot
    any |= took;
  }
  return any;
}

bool PeerPulls::finished() const {
  for (size_t b = 0; b < blocks_.size(); ++b)
    for (int k = ch_; k < blocks_[b].channels(); k += c_.channels)
      if (next_[b][size_t(k)] < blocks_[b].chunks_of(k)) return false;
  return true;
}

}  // namespace uccl
