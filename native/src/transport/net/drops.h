// Why a packet was dropped; every drop is counted under one of these.
#pragma once
#include <array>
#include <atomic>
#include <cstdint>

namespace uccl::net {

enum Drop : int {
  kDropMalformed,       // too short, bad magic, inconsistent fields
  kDropBadVersion,      // a uccl packet of another wire version
  kDropMisdirected,     // for another rank, or for an earlier instance of this endpoint
  kDropUnknownConn,     // from a rank we have no connection with
  kDropStalePeer,       // from an earlier instance of a known peer
  kDropBadAuth,         // wrong job secret
  kDropDuplicate,       // already received (a retransmission that crossed its ack)
  kDropOutOfWindow,     // sequence number beyond the receive window
  kDropOutOfBounds,     // a write outside a registered region, or without write access
  kDropBadRead,         // a read response nobody asked for, or out of its bounds
  kDropClosing,         // arrived while the endpoint was shutting down
  kDropStaleAck,        // an ack older than one already taken (a late replay, or overtaken on another path)
  kNumDrops
};

inline const char* drop_name(int d) {
  static const char* names[kNumDrops] = {
      "net: malformed packet",        "net: unsupported wire version", "net: misdirected or stale packet",
      "net: unknown connection",      "net: stale peer instance",      "net: wrong job secret",
      "net: duplicate packet",        "net: beyond receive window",    "net: write outside a registered region",
      "net: unexpected read response", "net: endpoint closing",  "net: stale ack"};
  return names[d];
}

// Adds to a counter that only the engine thread writes (others only read): a
// plain load and store, not a locked read-modify-write, on the per-packet path.
inline void bump(std::atomic<uint64_t>& c, uint64_t n = 1) {
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

// Counted by the engine thread, read (and reported once) by others.
struct DropCounters {
  std::array<std::atomic<uint64_t>, kNumDrops> total{};
  std::array<std::atomic<uint64_t>, kNumDrops> reported{};
  void add(Drop d, uint64_t n = 1) { bump(total[d], n); }
  // How many of reason d have not been reported yet (and marks them reported).
  uint64_t take_new(int d) {
    uint64_t t = total[size_t(d)].load(std::memory_order_relaxed);
    uint64_t r = reported[size_t(d)].exchange(t, std::memory_order_relaxed);
    return t > r ? t - r : 0;
  }
};

}  // namespace uccl::net
