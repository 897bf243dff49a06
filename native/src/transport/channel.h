// A channel moves operations to one peer. Implementations: shared memory
// (same host) and, later, the software-controlled net channel. The endpoint
// above sees only this interface.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "transport/completion.h"
#include "transport/region_table.h"

namespace uccl {

// Where a channel delivers what arrives from its peer.
class ChannelSink {
 public:
  virtual ~ChannelSink() = default;
  virtual void on_remote_write(int src, uint64_t key, uint64_t offset, uint64_t len, uint32_t imm) = 0;
  // One fragment of a two-sided message; fragments of a message arrive in order.
  virtual void on_message(int src, uint64_t tag, uint64_t total, uint64_t frag_off, const void* data,
                          size_t len) = 0;
  virtual void on_drop(const char* reason) = 0;
  // An operation that a channel completes asynchronously (write/read/send returned false).
  virtual void on_local_complete(Completion c) = 0;
};

// Blocks the calling thread until ready() holds, driving progress meanwhile;
// raises a timeout/peer error naming `what` and the peer.
using WaitFn = std::function<void(const std::function<bool()>& ready)>;

// Net channel only: one path (UDP source port) of the flow to a peer.
struct PathCounters {
  uint64_t packets_sent = 0, bytes_sent = 0, retransmits = 0, losses = 0, timeouts = 0;
  double srtt_us = 0, cwnd_bytes = 0, pacing_rate_bps = 0, inflight_bytes = 0;
};

// Net channel only: the flow to a peer (present == false for other channels).
struct NetCounters {
  bool present = false;
  uint64_t packets_sent = 0, payload_bytes_sent = 0, packets_received = 0, payload_bytes_received = 0;
  uint64_t retransmits = 0, timeouts = 0, tail_probes = 0, acks_sent = 0, acks_received = 0;
  double srtt_us = 0, rto_us = 0;
  std::map<std::string, uint64_t> drops;
  std::vector<PathCounters> paths;
};

struct PeerCounters {
  uint64_t writes = 0, bytes_written = 0, reads = 0, bytes_read = 0;
  uint64_t msgs_sent = 0, bytes_sent = 0, msgs_received = 0, bytes_received = 0, remote_writes = 0;
  NetCounters net;
};

class Channel {
 public:
  virtual ~Channel() = default;
  virtual const char* kind() const = 0;
  // Each operation returns true if it completed before returning (the local buffer
  // may be reused); false if the channel will report Completion{wr_id} later through
  // ChannelSink::on_local_complete from poll(). Until then the buffer must stay alive.
  // Errors detectable at once (bad key, bounds, flags) throw uccl::Error.
  //
  // One-sided write of [src, src+len) into the peer's region `rkey` at `roff`.
  virtual bool write(uint64_t wr_id, const void* src, uint64_t len, uint64_t rkey, uint64_t roff, bool with_imm,
                     uint32_t imm, const WaitFn& wait) = 0;
  virtual bool read(uint64_t wr_id, void* dst, uint64_t len, uint64_t rkey, uint64_t roff) = 0;
  virtual bool send(uint64_t wr_id, const void* data, uint64_t len, uint64_t tag, const WaitFn& wait) = 0;
  // Delivers everything that has arrived to the sink (called with the endpoint's lock
  // held); returns how many events.
  virtual size_t poll(ChannelSink& sink) = 0;
  virtual bool peer_alive() = 0;
  // The peer closed its endpoint before it went (a normal exit after its last operation):
  // its absence fails only waits for the peer itself. Known over shared memory only.
  virtual bool peer_closed() { return false; }
  // Operations of the peer's this side refused so far (a write out of bounds, say). Only
  // the net channel can refuse after the fact: shm checks every operation as it is posted.
  virtual uint64_t refused() const { return 0; }
  virtual PeerCounters counters() const = 0;
  // Where [roff, roff + len) of the peer's region `rkey` (remote read and write
  // granted) is mapped into this process, or nullptr (the net channel; memory outside
  // the peer's shared arena). Loads and stores through it are the peer's as they happen.
  virtual char* map_remote(uint64_t /*rkey*/, uint64_t /*roff*/, uint64_t /*len*/) { return nullptr; }
  // Wakes the peer if it sleeps in a wait (it re-checks what it waits for).
  virtual void wake() {}
};

}  // namespace uccl
