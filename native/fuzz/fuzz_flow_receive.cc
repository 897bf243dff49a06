// Fuzzes the receive path of a flow without sockets: a scripted peer's packets
// (data and acks, with valid or altered headers), this side's own operations and
// the passing of time go into one Flow, the way the engine drives it.
// Properties: no crash, no sanitizer report, nothing written outside the one
// region that grants remote write (ASan-poisoned guards around it) and outside
// the destinations of this side's reads; the read-only and the no-access region
// keep their bytes.
//
// Input (flow_input.h): the set-up, then commands until the input ends.
#include <sanitizer/asan_interface.h>

#include <cstring>
#include <memory>
#include <vector>

#include "common/clock.h"
#include "flow_input.h"
#include "fuzz_support.h"
#include "transport/net/flow/flow.h"
#include "transport/net/packet.h"

using namespace uccl;
using namespace uccl::net;
using namespace uccl::fuzz;

namespace {

constexpr size_t kGuard = 64;
constexpr uint8_t kPattern = 0xa5;

// A registered region whose neighbourhood is poisoned: ASan reports any write past it.
struct GuardedRegion {
  explicit GuardedRegion(size_t len) : len(len), mem(new char[len + 2 * kGuard]) {
    std::memset(mem.get(), kPattern, len + 2 * kGuard);
    ASAN_POISON_MEMORY_REGION(mem.get(), kGuard);
    ASAN_POISON_MEMORY_REGION(mem.get() + kGuard + len, kGuard);
  }
  ~GuardedRegion() { ASAN_UNPOISON_MEMORY_REGION(mem.get(), len + 2 * kGuard); }
  char* addr() { return mem.get() + kGuard; }
  bool untouched() const {
    for (size_t i = 0; i < len; ++i)
      if (uint8_t(mem[kGuard + i]) != kPattern) return false;
    return true;
  }
  size_t len;
  std::unique_ptr<char[]> mem;
};

// The header the peer's packets carry (what the engine checks before a flow sees them).
CommonHeader rx_common(const Flow& f, uint8_t type) {
  CommonHeader c{};
  c.magic = kMagic;
  c.version = kVersion;
  c.type = type;
  c.src_rank = kPeer;
  c.dst_rank = kMe;
  c.src_nonce = kPeerNonce;
  c.dst_nonce = kMyNonce;
  c.auth = f.rx_auth();
  return c;
}

// The engine's dispatch for one flow: the common header checks, then decode_packet.
void deliver(Flow& f, const char* data, uint32_t len, uint64_t now) {
  CommonHeader c;
  if (len < sizeof(c)) return;
  std::memcpy(&c, data, sizeof(c));
  if (c.magic != kMagic || c.version != kVersion || c.dst_rank != kMe || c.dst_nonce != kMyNonce ||
      c.src_rank != kPeer || c.src_nonce != kPeerNonce || c.auth != f.rx_auth())
    return;
  DataHeader h;
  AckHeader a;
  uint32_t payload = 0;
  RxPacket from{0, data, len, 0x0100007f, 4791};
  switch (decode_packet(data, len, &h, &payload, &a)) {
    case Parsed::kData: f.on_data(h, data + sizeof(DataWire), payload, from, now); break;
    case Parsed::kAck: f.on_ack(a, now); break;
    case Parsed::kMalformed: break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ByteReader in(data, size);
  RegionSlot slots[4] = {};
  RegionTable table(slots, 4, true);
  GuardedRegion writable(in.in_range(1, kMaxRegion));
  GuardedRegion read_only(256), no_access(256);
  const uint64_t keys[kNumRegions] = {
      table.add(uint64_t(writable.addr()), writable.len, kRemoteWrite | kRemoteRead),
      table.add(uint64_t(read_only.addr()), read_only.len, kRemoteRead),
      table.add(uint64_t(no_access.addr()), no_access.len, 0)};

  FlowParams p;
  p.my_rank = kMe;
  p.peer_rank = kPeer;
  p.my_nonce = kMyNonce;
  p.peer_nonce = kPeerNonce;
  p.secret = kSecret;
  p.num_paths = int(in.in_range(1, kMaxFlowPaths));
  p.mtu = kMtus[in.in_range(0, 2)];
  const std::vector<std::string> ccs = cc_names();
  p.cc = ccs[in.in_range(0, 255) % ccs.size()];
  p.max_retries = 3;

  std::vector<std::unique_ptr<GuardedRegion>> read_dsts;  // where this side's reads land
  std::vector<char> src(kMaxOpBytes, 'x');                // what this side's writes send
  uint64_t now = now_ns();
  auto batch = std::make_unique<TxBatch>();
  {
    Flow flow(p, &table);
    Flow::Output out;
    for (int steps = 0; in.remaining() && steps < kMaxSteps; ++steps) {
      const Cmd cmd = Cmd(in.in_range(0, kNumCmds - 1));
      switch (cmd) {
        case kCmdData:
        case kCmdAck: {  // the peer's packet, its common header made valid
          std::vector<char> pkt = in.bytes(in.in_range(0, kMaxPacket));
          if (pkt.size() >= sizeof(CommonHeader)) {
            const CommonHeader c = rx_common(flow, cmd == kCmdData ? kData : kAck);
            std::memcpy(pkt.data(), &c, sizeof(c));
          }
          // A small `a` names one of the registered regions (the fuzzer cannot guess their keys).
          if (cmd == kCmdData && pkt.size() >= sizeof(DataWire)) {
            DataWire w;
            std::memcpy(&w, pkt.data(), sizeof(w));
            if (w.a < kNumRegions && (w.op == kOpWrite || w.op == kOpReadReq)) w.a = keys[w.a];
            std::memcpy(pkt.data(), &w, sizeof(w));
          }
          deliver(flow, pkt.data(), uint32_t(pkt.size()), now);  // exact size: reads past it are reported
          break;
        }
        case kCmdRaw: {  // any datagram at all
          std::vector<char> pkt = in.bytes(in.in_range(0, kMaxPacket));
          deliver(flow, pkt.data(), uint32_t(pkt.size()), now);
          break;
        }
        case kCmdSubmit: {  // this side starts an operation
          const uint64_t kind = in.in_range(0, 2);
          const uint64_t len = in.in_range(0, kMaxOpBytes);
          const uint64_t key_or_tag = in.take<uint64_t>();
          const uint64_t off = in.in_range(0, kMaxRegion);
          const uint64_t wr_id = uint64_t(steps);
          if (kind == 0) {
            flow.submit(write_op(wr_id, src.data(), len, key_or_tag, off));
          } else if (kind == 1) {
            flow.submit(send_op(wr_id, src.data(), len, key_or_tag));
          } else {
            read_dsts.push_back(std::make_unique<GuardedRegion>(len ? len : 1));
            flow.submit(read_op(wr_id, read_dsts.back()->addr(), len, key_or_tag, off));
          }
          flow.take_submissions(now);
          break;
        }
        case kCmdTick: {  // time passes: acks owed go out, timers fire, the sender sends
          now += in.in_range(0, kMaxTickNs);
          flow.take_submissions(now);
          AckHeader a;
          int q;
          uint32_t ip;
          uint16_t port;
          if (flow.take_ack(&a, &q, &ip, &port, now)) FUZZ_CHECK(ack_length(a) <= sizeof(a));
          flow.on_timer(now);
          batch->n = 0;
          flow.pump(now, batch.get());
          for (size_t i = 0; i < batch->n; ++i) {
            FUZZ_CHECK(batch->pkts[i].payload_len + sizeof(DataWire) <= p.mtu);
            FUZZ_CHECK(batch->pkts[i].queue >= 0 && batch->pkts[i].queue < p.num_paths);
          }
          flow.publish();
          flow.take_output(&out);
          out.completions.clear();
          out.events.clear();
          break;
        }
        case kNumCmds:
          break;
      }
    }
  }
  FUZZ_CHECK(read_only.untouched());
  FUZZ_CHECK(no_access.untouched());
  return 0;
}
