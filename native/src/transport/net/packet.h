// Wire format of the net channel. Every packet starts with a CommonHeader that
// names its connection (source rank -> destination rank, each side's instance
// nonce) and carries a tag keyed by the per-job secret, so packets from
// strangers, other jobs or earlier incarnations are recognised and dropped.
// Integers are in the host's byte order: peers of one job share an ABI.
#pragma once
#include <cstddef>
#include <cstdint>

namespace uccl::net {

constexpr uint32_t kMagic = 0x314e4355;  // "UCN1"
constexpr uint8_t kVersion = 1;

enum PacketType : uint8_t { kData = 1, kAck = 2 };

// What a data packet belongs to; one operation (msg) spans one or more packets.
enum OpKind : uint8_t {
  kOpWrite = 1,     // a=rkey b=remote offset; imm valid with kFlagImm
  kOpSend = 2,      // a=tag
  kOpReadReq = 3,   // a=rkey b=remote offset c=length
  kOpReadResp = 4,  // a=msg id of the read request
  kOpError = 5,     // a=msg id that was refused b=ErrorCode
  kOpNop = 6,       // liveness probe
};

enum ErrorCode : uint64_t { kErrNoKey = 1, kErrNoWriteAccess = 2, kErrBounds = 3, kErrNoReadAccess = 4 };

constexpr uint8_t kFlagImm = 1;

struct CommonHeader {
  uint32_t magic;
  uint8_t version;
  uint8_t type;
  uint16_t path;
  uint16_t src_rank;
  uint16_t dst_rank;
  uint32_t src_nonce;  // sender's instance
  uint32_t dst_nonce;  // receiver's instance: a restarted receiver drops old traffic
  uint64_t auth;       // keyed by the job secret over the connection id
};
static_assert(sizeof(CommonHeader) == 32, "wire layout");

struct DataHeader {
  CommonHeader common;
  uint64_t seq;       // per-flow packet sequence number
  uint64_t ts_ns;     // sender clock at transmission, echoed in acks for RTT
  uint64_t msg_id;    // per-flow operation number, in order
  uint64_t total;     // payload bytes of the whole operation
  uint64_t frag_off;  // where this packet's payload sits within the operation
  uint64_t a, b, c;   // per-kind fields (see OpKind)
  uint32_t imm;
  uint32_t payload_len;
  uint8_t op;
  uint8_t flags;
  uint8_t pad[6];
};
static_assert(sizeof(DataHeader) == 112, "wire layout");

// Receive window in packets; an ack covers it with a bitmap.
constexpr uint64_t kWindow = 1024;
constexpr size_t kSackWords = kWindow / 64;

struct AckHeader {
  CommonHeader common;
  uint64_t cum_ack;   // every seq below has arrived
  uint64_t echo_seq;  // the newest arrival, for RTT
  uint64_t echo_ts;
  uint64_t rejects;   // operations refused so far (their error follows as kOpError)
  uint16_t echo_path;
  uint16_t pad[3];
  uint64_t sack[kSackWords];  // bit i: seq cum_ack + i has arrived
};

// A 64-bit keyed tag over the connection id. Not a MAC of the payload: it keeps
// strangers and other jobs out, not an on-path attacker.
inline uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

inline uint64_t conn_auth(uint64_t secret, uint16_t src, uint16_t dst, uint32_t src_nonce, uint32_t dst_nonce) {
  uint64_t id = (uint64_t(src) << 48) ^ (uint64_t(dst) << 32) ^ (uint64_t(src_nonce) * 0x9e3779b97f4a7c15ull) ^ dst_nonce;
  return mix64(mix64(secret ^ 0x75636c6c6e657431ull) ^ id);
}

}  // namespace uccl::net
