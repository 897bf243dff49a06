// The endpoint descriptor: what an endpoint publishes at bootstrap (job secret,
// rank, its shared segment, its host's identity) followed by the net channel's
// address as an opaque tail, and how a peer's is read back. The bytes come from
// the bootstrap store, i.e. from another process: every length is checked.
#pragma once
#include <cstdint>
#include <string>

namespace uccl {

constexpr uint64_t kDescriptorMagic = 0x55434c4c44455331ull;  // "UCLLDES1"

struct Descriptor {
  uint64_t magic;
  uint64_t secret;
  int32_t rank, world, pid, fd;
  uint64_t segment_bytes;
  char host[128];  // boot id + pid and net namespaces: equal means same host, /proc/<pid>/fd and CMA reach the peer
};

// The descriptor's bytes, then `net_tail` (empty without a net channel).
std::string encode_descriptor(const Descriptor& d, const std::string& net_tail);

struct PeerDescriptor {
  Descriptor d{};
  std::string host;      // d.host up to its terminator (never past the field)
  std::string net_tail;  // what follows the fixed part (the net channel's address)
};
enum class DescriptorCheck { kOk, kMalformed, kForeign };
// Reads rank `rank`'s descriptor; kForeign when it belongs to another job, rank or world.
DescriptorCheck decode_descriptor(const std::string& bytes, int rank, int world, uint64_t secret, PeerDescriptor* out);

}  // namespace uccl
