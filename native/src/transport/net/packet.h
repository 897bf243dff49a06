// Wire format of the net channel. Every packet starts with a CommonHeader that
// names its connection (source rank -> destination rank, each side's instance
// nonce) and carries a tag keyed by the per-job secret, so packets from
// strangers, other jobs or earlier incarnations are recognised and dropped.
// Integers are in the host's byte order: peers of one job share an ABI.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace uccl::net {

constexpr uint16_t kMagic = 0x4355;  // "UC"
constexpr uint8_t kVersion = 3;      // 2: the compact header (64-byte data header); 3: acks carry timestamps

enum PacketType : uint8_t { kData = 1, kAck = 2 };

// What a data packet belongs to; one operation (msg) spans one or more packets.
enum OpKind : uint8_t {
  kOpWrite = 1,     // a=rkey b=remote offset; imm valid with kFlagImm
  kOpSend = 2,      // a=tag
  kOpReadReq = 3,   // a=rkey b=remote offset c=length
  kOpReadResp = 4,  // a=msg id of the read request
  kOpError = 5,     // a=msg id that was refused b=ErrorCode c=region length
  kOpNop = 6,       // liveness probe
};

// Kinds that never carry payload: their wire `total` field holds c instead.
inline bool carries_c(uint8_t op) { return op == kOpReadReq || op == kOpError || op == kOpNop; }

enum ErrorCode : uint64_t {
  kErrNoKey = 1,
  kErrNoWriteAccess = 2,
  kErrBounds = 3,
  kErrNoReadAccess = 4,
  kErrTooLarge = 5,  // a message past kMaxNetMessage (c = the limit), or one memory cannot hold
};

constexpr uint8_t kFlagImm = 1;
constexpr uint8_t kFlagLast = 2;  // the operation's last packet (its payload ends the operation)

// 20 bytes. The nonces stay explicit (not only folded into auth) so a packet
// from an earlier instance is told apart from one of another job.
struct CommonHeader {
  uint16_t magic;
  uint8_t version;
  uint8_t type;
  uint16_t src_rank;
  uint16_t dst_rank;
  uint32_t src_nonce;  // sender's instance
  uint32_t dst_nonce;  // receiver's instance: a restarted receiver drops old traffic
  uint32_t auth;       // keyed by the job secret over the connection id
};
static_assert(sizeof(CommonHeader) == 20, "wire layout");

// On the wire every data packet carries this 64-byte header; what could be
// derived is left out (docs/net-flow.md):
//  - seq and msg id travel as their low 32 bits; the receiver widens them
//    against its own cumulative counters (both stay within the kWindow-packet
//    window of them);
//  - no timestamp: the sender keeps each packet's send time and takes RTT
//    samples from the first transmissions an ack covers (Karn);
//  - the payload length is the datagram's;
//  - the byte offset is the packet's index within the operation times the
//    payload of a full packet (every packet but the last is full), and the last
//    packet (kFlagLast) ends the operation: offset = total - length;
//  - kinds without payload carry their third operand where `total` would be.
struct DataWire {
  CommonHeader common;
  uint32_t seq;
  uint32_t msg_id;
  uint32_t index;  // packet number within the operation
  uint8_t op;
  uint8_t flags;
  uint16_t path;
  uint32_t imm;
  uint64_t total;  // payload bytes of the whole operation (c for carries_c kinds)
  uint64_t a, b;   // per-kind fields (see OpKind)
};
static_assert(sizeof(DataWire) == 64, "wire layout");

// A data header as the flow uses it, widened from the wire.
struct DataHeader {
  CommonHeader common;
  uint32_t seq32 = 0, msg32 = 0;
  uint16_t path = 0;
  uint8_t op = 0, flags = 0;
  uint32_t imm = 0;
  uint64_t total = 0, frag_off = 0, a = 0, b = 0, c = 0;
};

// Fills `h` from a received packet whose payload is `len` bytes; false if the
// fields cannot describe a packet of that length.
inline bool decode_data(const DataWire& w, uint32_t len, DataHeader* h) {
  h->common = w.common;
  h->seq32 = w.seq;
  h->msg32 = w.msg_id;
  h->path = w.path;
  h->op = w.op;
  h->flags = w.flags;
  h->imm = w.imm;
  h->a = w.a;
  h->b = w.b;
  if (carries_c(w.op)) {
    h->total = 0;
    h->c = w.total;
    h->frag_off = 0;
    return len == 0;
  }
  h->total = w.total;
  h->c = 0;
  if (w.flags & kFlagLast) {
    if (len > w.total) return false;
    h->frag_off = w.total - len;
  } else {
    if (len == 0) return false;  // only a last packet may be short
    h->frag_off = uint64_t(w.index) * len;
    if (h->frag_off > w.total || len >= w.total - h->frag_off) return false;  // it would end the operation
  }
  return true;
}

// Receive window in packets; an ack covers it with a bitmap. Large enough to
// leave the window to congestion control at a loaded host's RTT (docs/net-flow.md).
constexpr uint64_t kWindow = 4096;
constexpr size_t kSackWords = kWindow / 64;

struct AckHeader {
  CommonHeader common;
  uint16_t echo_path;  // path of the newest arrival
  uint16_t hold_us;    // how long the newest arrival waited for this ack (saturates)
  uint64_t cum_ack;   // every seq below has arrived
  uint64_t echo_seq;  // the newest arrival
  uint64_t rejects;   // operations refused so far (their error follows as kOpError)
  uint64_t sent_ns;   // the acker's clock when the ack left (see reverse_delay.h)
  uint64_t sack[kSackWords];  // bit i: seq cum_ack + i has arrived
};
static_assert(sizeof(AckHeader) == 24 + 32 + 8 * kSackWords, "wire layout");

// An ack goes out without its trailing all-zero SACK words: with nothing missing
// it is 56 bytes, not 568 (acks share the reverse path with data in an all_to_all).
inline size_t ack_length(const AckHeader& a) {
  size_t words = kSackWords;
  while (words && a.sack[words - 1] == 0) --words;
  return offsetof(AckHeader, sack) + 8 * words;
}
inline bool ack_length_ok(size_t len) {
  return len >= offsetof(AckHeader, sack) && len <= sizeof(AckHeader) && (len - offsetof(AckHeader, sack)) % 8 == 0;
}

// What a received datagram is once its common header has been checked (engine.cc):
// a data packet (header decoded into `h`, its payload the `*payload_len` bytes after
// the DataWire), an ack (into `a`, the SACK words its sender left off zeroed), or
// malformed. Every field is checked against the datagram's length first.
enum class Parsed { kMalformed, kData, kAck };
inline Parsed decode_packet(const char* data, uint32_t len, DataHeader* h, uint32_t* payload_len, AckHeader* a) {
  CommonHeader c;
  if (len < sizeof(c)) return Parsed::kMalformed;
  std::memcpy(&c, data, sizeof(c));
  if (c.type == kData && len >= sizeof(DataWire)) {
    DataWire w;
    std::memcpy(&w, data, sizeof(w));
    *payload_len = len - uint32_t(sizeof(w));
    return decode_data(w, *payload_len, h) ? Parsed::kData : Parsed::kMalformed;
  }
  if (c.type == kAck && ack_length_ok(len)) {
    std::memset(a, 0, sizeof(*a));
    std::memcpy(a, data, len);
    return Parsed::kAck;
  }
  return Parsed::kMalformed;
}

// The 64 bits of a SACK bitmap that start at bit `off` (zeros past its end).
inline uint64_t bits_from(const std::array<uint64_t, kSackWords>& words, uint64_t off) {
  const uint64_t w = off / 64, sh = off % 64;
  if (w >= kSackWords) return 0;
  const uint64_t lo = words[w] >> sh;
  if (sh == 0 || w + 1 >= kSackWords) return lo;
  return lo | (words[w + 1] << (64 - sh));
}

// Widens a 32-bit counter sent by the peer against `ref`, a nearby 64-bit value
// we hold (the result lies within 2^31 of it; never below zero).
inline uint64_t widen32(uint32_t v, uint64_t ref) {
  int32_t d = int32_t(v - uint32_t(ref));
  if (d < 0 && uint64_t(-int64_t(d)) > ref) return 0;
  return uint64_t(int64_t(ref) + d);
}

// A 32-bit keyed tag over the connection id (a stranger guesses it with odds 2^-32). Not a MAC of the payload: it keeps
// strangers and other jobs out, not an on-path attacker.
inline uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

inline uint32_t conn_auth(uint64_t secret, uint16_t src, uint16_t dst, uint32_t src_nonce, uint32_t dst_nonce) {
  uint64_t id = (uint64_t(src) << 48) ^ (uint64_t(dst) << 32) ^ (uint64_t(src_nonce) * 0x9e3779b97f4a7c15ull) ^ dst_nonce;
  return uint32_t(mix64(mix64(secret ^ 0x75636c6c6e657431ull) ^ id) >> 32);
}

}  // namespace uccl::net
