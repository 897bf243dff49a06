// The shared-memory channel to a peer on this host. Bulk data moves with one
// copy: a memcpy when the peer's region lies in its shared arena (mapped here),
// else cross-memory attach (process_vm_writev/readv straight into the peer's
// registered region); small writes-with-immediate and messages travel inline
// through an SPSC ring in the receiver's segment.
#pragma once
#include <sys/types.h>

#include <mutex>

#include "transport/channel.h"
#include "transport/shm/segment_layout.h"
#include "transport/shm/segment.h"

namespace uccl {

struct ShmChannelParams {
  int my_rank;
  int peer_rank;
  pid_t peer_pid;
  uint64_t inline_max;  // writes-with-imm up to this size go through the ring
  double timeout_s = defaults::timeout;  // bounds a wait on the peer's region table
};

class ShmChannel final : public Channel {
 public:
  // `peer_seg` is the peer's segment (already attached), `own` ours; for a
  // channel to ourselves both are the same memory.
  ShmChannel(const ShmChannelParams& p, void* own_base, void* peer_base, const SegmentLayout& layout,
             RegionTable* own_table);
  ~ShmChannel() override;

  const char* kind() const override { return "shm"; }
  bool write(uint64_t wr_id, const void* src, uint64_t len, uint64_t rkey, uint64_t roff, bool with_imm,
             uint32_t imm, const WaitFn& wait) override;
  bool read(uint64_t wr_id, void* dst, uint64_t len, uint64_t rkey, uint64_t roff) override;
  bool send(uint64_t wr_id, const void* data, uint64_t len, uint64_t tag, const WaitFn& wait) override;
  size_t poll(ChannelSink& sink) override;
  bool peer_alive() override;
  bool peer_closed() override { return peer_hdr_->closed.load(std::memory_order_acquire) != 0; }
  char* map_remote(uint64_t rkey, uint64_t roff, uint64_t len) override;
  void wake() override { peer_hdr_->bell.ring(); }
  PeerCounters counters() const override {
    std::lock_guard<std::mutex> lock(send_mu_);
    return counters_;
  }

 private:
  Region check_remote(uint64_t rkey, uint64_t roff, uint64_t len, uint32_t need, const char* op);
  RecordHeader* reserve(size_t payload, const WaitFn& wait);
  void commit(RecordHeader* rec);
  void copy_to_peer(const void* src, uint64_t dst_addr, uint64_t len);
  void copy_from_peer(void* dst, uint64_t src_addr, uint64_t len);
  // Where [peer_addr, peer_addr + len) of the peer's arena is mapped here, else nullptr.
  char* mapped(uint64_t peer_addr, uint64_t len) const;

  ShmChannelParams p_;
  bool self_;
  SegmentHeader* peer_hdr_;
  RegionTable peer_table_;  // read-only view of the peer's registrations
  RegionTable* own_table_;
  SpscRing out_;            // our ring inside the peer's segment
  SpscRing in_;             // the peer's ring inside our segment
  mutable std::mutex send_mu_;  // the outgoing ring and the counters
  int pidfd_ = -1;
  PeerCounters counters_;
  char* peer_map_;                         // the peer's segment, mapped here
  uint64_t peer_arena_lo_, peer_arena_hi_;  // its arena, as addresses in the peer's process
};

}  // namespace uccl
