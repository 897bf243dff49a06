// An endpoint: this process's attachment to the job. It owns the memory
// registry, one channel per peer, the matching of two-sided messages and the
// completion state; application threads call in and wait (spin, then sleep).
#pragma once
#include <atomic>
#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "transport/shm/arena.h"
#include "transport/channel.h"
#include "transport/completion.h"
#include "transport/net/net_transport.h"
#include "transport/region_table.h"
#include "transport/shm/segment_layout.h"
#include "transport/shm/segment.h"

namespace uccl {

// The smallest shared-memory ring (rings are powers of two; inline writes get 1/8 of one).
constexpr uint64_t kMinRingBytes = 4096;

// What an endpoint is told. The settings among the fields are declared in
// uccl/config.py (default, bounds, help), which fills them; the defaults here
// come from the header it generates.
struct EndpointConfig {
  int rank = 0;
  int world = 1;
  uint64_t secret = 0;
  std::string transport = defaults::transport;  // auto | shm | net
  // The host a declared topology puts this rank on (a short tag, <= 32 chars): ranks
  // with different tags use the net channel between them. Empty: none declared.
  std::string host_tag;
  double timeout_s = defaults::timeout;
  double spin_us = defaults::spin_us;
  // After spinning, yield the core this long before sleeping. Negative: automatic,
  // kAutoYieldUs when every peer is on shared memory, none when any is on the net.
  double yield_us = defaults::yield_us;
  uint64_t ring_bytes = defaults::shm_ring_bytes;
  uint64_t inline_max = defaults::inline_max;
  uint64_t arena_bytes = defaults::shm_arena_bytes;  // shared memory peers map (allocated as it is touched)
  uint32_t max_regions = defaults::max_regions;
  NetConfig net;
};

class Endpoint : private ChannelSink {
 public:
  explicit Endpoint(const EndpointConfig& cfg);
  ~Endpoint() override;

  int rank() const { return cfg_.rank; }
  int world() const { return cfg_.world; }
  const EndpointConfig& config() const { return cfg_; }

  // Bootstrap: publish our descriptor, then connect with everyone's (index = rank).
  std::string descriptor() const;
  void connect(const std::vector<std::string>& descriptors);
  std::string channel_kind(int peer) const;
  uint64_t refused_by_us(int peer) const;  // Channel::refused()

  // Memory in this endpoint's shared segment, which peers on this host write into
  // with memcpy rather than a system call; nullptr when the arena is full (the caller
  // falls back to its own memory). Register it like any other buffer.
  void* alloc_shared(uint64_t bytes) { return arena_.alloc(bytes); }
  void free_shared(void* p) { arena_.release(p); }

  uint64_t register_region(uint64_t addr, uint64_t len, uint32_t flags);
  void deregister_region(uint64_t key);
  Region local_region(uint64_t key, uint64_t off, uint64_t len, const char* op) const;

  // Operations return a work request; if `done`, it completed before returning and
  // nothing is kept for it, else wait(wr_id) returns its completion, or detach(wr_id)
  // says nobody will.
  struct Posted {
    uint64_t wr_id;
    bool done;
  };
  // `hold` keeps the caller's memory alive until the operation completes (it is
  // released then, on whichever thread makes progress, possibly with the endpoint's
  // lock held: its destruction must not block).
  using Hold = std::shared_ptr<void>;
  Posted write(int peer, uint64_t lkey, uint64_t loff, uint64_t len, uint64_t rkey, uint64_t roff, bool with_imm,
               uint32_t imm, Hold hold = nullptr);
  Posted read(int peer, uint64_t lkey, uint64_t loff, uint64_t len, uint64_t rkey, uint64_t roff,
              Hold hold = nullptr);
  Posted send(int peer, const void* data, uint64_t len, uint64_t tag, Hold hold = nullptr);
  // Nobody will wait for `wr_id` (fire and forget): its completion is dropped when it
  // arrives, unless it failed; a failure is raised by the next wait that concerns its
  // peer (or any peer). An unknown or already collected id is ignored.
  void detach(uint64_t wr_id);
  // Loads straight from a peer's region, where the channel maps it (Channel::map_remote).
  char* map_remote(int peer, uint64_t rkey, uint64_t roff, uint64_t len);
  void wake(int peer);
  uint64_t post_recv(int src, void* buf, uint64_t cap, uint64_t tag, Hold hold = nullptr);

  Completion wait(uint64_t wr_id, double timeout_s);
  bool test(uint64_t wr_id);
  // Remote writes-with-immediate that landed here, oldest first (src may be kAnySource).
  Completion wait_remote_write(int src, double timeout_s);
  std::vector<Completion> poll_remote_writes(size_t max);
  // For a layer that owns this endpoint's remote-write events (the collectives):
  // hands each pending event to `fn`. Call from inside a wait_until ready() or any thread.
  void drain_remote_writes(const std::function<void(const Completion&)>& fn);

  // Drives progress until ready() or the deadline; errors name the operation and peer.
  void wait_until(const std::function<bool()>& ready, double timeout_s, const OpDesc& op);
  void progress();
  // The peers whose process died without closing its endpoint (for naming the root cause
  // of an operation that failed on a peer that had given up because of them).
  std::vector<int> dead_peers();

  struct Stats {
    std::vector<PeerCounters> peers;
    std::map<std::string, uint64_t> drops;
    uint64_t completions_held = 0;      // completed operations nobody has waited for yet
    uint64_t operations_in_flight = 0;  // posted operations not yet completed
  };
  Stats stats();

 private:
  // An operation posted and not yet completed.
  struct Pending {
    OpDesc op;
    Hold hold;              // the caller's memory, until completion
    bool detached = false;  // nobody waits: keep the completion only if it failed
  };
  struct PostedRecv {
    uint64_t wr_id;
    int src;
    uint64_t tag;
    char* buf;
    uint64_t cap;
  };
  struct Unexpected {
    int src;
    uint64_t tag;
    std::vector<char> data;
    uint64_t received = 0;
    bool complete() const { return received == data.size(); }
  };
  // Where the fragments of the message now arriving from a peer go.
  struct Assembly {
    bool active = false;
    bool to_posted = false;
    PostedRecv posted{};
    std::list<Unexpected>::iterator unexpected;
    uint64_t received = 0;
  };

  // ChannelSink
  void on_remote_write(int src, uint64_t key, uint64_t offset, uint64_t len, uint32_t imm) override;
  void on_message(int src, uint64_t tag, uint64_t total, uint64_t frag_off, const void* data, size_t len) override;
  void on_drop(const char* reason) override;
  void on_local_complete(Completion c) override;

  // Registers a pending operation, posts it, and records its completion if the
  // channel finished it synchronously.
  Posted start(const OpDesc& op, const std::function<bool(uint64_t)>& post, Hold hold);
  // Records a completion for whoever waits for it (or drops it: detach()).
  void settle(Completion c);
  // Raises the oldest failure of a detached operation that concerns `op`'s peer, if any.
  void raise_detached_failure(const OpDesc& op);

  void check_peer(int peer, const char* op) const;
  uint64_t next_wr_id() { return next_wr_.fetch_add(1, std::memory_order_relaxed); }
  void complete_recv(const PostedRecv& r, int src, uint64_t tag, uint64_t total);
  void progress_locked();
  [[noreturn]] void raise_wait_failure(const OpDesc& op, double timeout_s);
  WaitFn waiter(const OpDesc& op);

  EndpointConfig cfg_;
  SegmentLayout layout_;
  ShmSegment own_;
  SegmentHeader* hdr_;
  std::unique_ptr<RegionTable> table_;
  Arena arena_;
  std::unique_ptr<NetTransport> net_;  // null when UCCL_TRANSPORT=shm
  std::vector<ShmSegment> peer_segments_;
  std::vector<std::unique_ptr<Channel>> channels_;
  bool connected_ = false;
  double yield_us_ = 0;  // in effect (cfg_.yield_us resolved at connect)

  std::recursive_mutex mu_;  // progress and completion state
  std::atomic<uint64_t> next_wr_{1};
  std::unordered_map<uint64_t, Completion> done_;
  std::unordered_map<uint64_t, Pending> pending_;
  std::deque<Completion> detached_failures_;  // failed detached operations, not yet raised
  std::deque<Completion> remote_writes_;
  std::list<PostedRecv> posted_;
  std::list<Unexpected> unexpected_;
  std::vector<Assembly> assembly_;
  std::map<std::string, uint64_t> drops_;
};

}  // namespace uccl
