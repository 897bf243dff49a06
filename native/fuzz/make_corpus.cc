// Writes the seed corpus: valid inputs of every kind for each harness, built from
// the same structs and encoders the code under test uses.
//   uccl_fuzz_corpus <native/fuzz/corpus>    (writes <dir>/<harness>/seed-<name>)
#include <arpa/inet.h>
#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "flow_input.h"
#include "fuzz_support.h"
#include "transport/descriptor.h"
#include "transport/net/datapath/udp_datapath.h"
#include "transport/net/packet.h"

using namespace uccl;
using namespace uccl::net;
using namespace uccl::fuzz;

namespace {

std::string g_root;

void save(const std::string& harness, const std::string& name, const std::string& bytes) {
  const std::string dir = g_root + "/" + harness;
  mkdir(g_root.c_str(), 0755);
  mkdir(dir.c_str(), 0755);
  std::ofstream(dir + "/seed-" + name, std::ios::binary) << bytes;
}

CommonHeader common(uint8_t type) {
  CommonHeader c{};
  c.magic = kMagic;
  c.version = kVersion;
  c.type = type;
  c.src_rank = kPeer;
  c.dst_rank = kMe;
  c.src_nonce = kPeerNonce;
  c.dst_nonce = kMyNonce;
  return c;
}

std::string data_packet(uint32_t seq, uint32_t msg, uint32_t index, uint8_t op, uint8_t flags, uint64_t total,
                        uint64_t a, uint64_t b, uint32_t payload) {
  DataWire w{};
  w.common = common(kData);
  w.seq = seq;
  w.msg_id = msg;
  w.index = index;
  w.op = op;
  w.flags = flags;
  w.total = total;
  w.a = a;
  w.b = b;
  std::string out(reinterpret_cast<const char*>(&w), sizeof(w));
  return out + std::string(payload, char('a' + seq % 26));
}

std::string ack_packet(uint64_t cum, uint64_t echo, uint64_t rejects, std::vector<uint64_t> sack) {
  AckHeader a{};
  a.common = common(kAck);
  a.cum_ack = cum;
  a.echo_seq = echo;
  a.rejects = rejects;
  for (size_t i = 0; i < sack.size() && i < kSackWords; ++i) a.sack[i] = sack[i];
  return std::string(reinterpret_cast<const char*>(&a), ack_length(a));
}

// ---- fuzz_flow_receive: a scripted exchange
struct FlowScript {
  ByteWriter w;
  FlowScript(uint64_t region, int paths, int mtu_index) {
    w.in_range(1, kMaxRegion, region).in_range(1, kMaxFlowPaths, uint64_t(paths)).in_range(0, 2, uint64_t(mtu_index));
    w.in_range(0, 255, 0);
  }
  FlowScript& packet(Cmd cmd, const std::string& pkt) {
    w.in_range(0, kNumCmds - 1, cmd).in_range(0, kMaxPacket, pkt.size()).bytes(pkt.data(), pkt.size());
    return *this;
  }
  FlowScript& submit(int kind, uint64_t len, uint64_t a, uint64_t b) {
    w.in_range(0, kNumCmds - 1, kCmdSubmit).in_range(0, 2, uint64_t(kind)).in_range(0, kMaxOpBytes, len);
    w.put(a).in_range(0, kMaxRegion, b);
    return *this;
  }
  FlowScript& tick(uint64_t ns) {
    w.in_range(0, kNumCmds - 1, kCmdTick).in_range(0, kMaxTickNs, ns);
    return *this;
  }
};

void flow_seeds() {
  const char* h = "flow_receive";
  // MTU 256: 192 payload bytes per full packet.
  save(h, "write-one-packet", FlowScript(1024, 1, 0).packet(kCmdData, data_packet(0, 0, 0, kOpWrite, kFlagLast, 100, 0, 16, 100)).tick(100000).w.str());
  save(h, "write-three-packets",
       FlowScript(1024, 2, 0)
           .packet(kCmdData, data_packet(0, 0, 0, kOpWrite, 0, 400, 0, 0, 192))
           .packet(kCmdData, data_packet(2, 0, 2, kOpWrite, kFlagLast, 400, 0, 0, 16))
           .packet(kCmdData, data_packet(1, 0, 1, kOpWrite, 0, 400, 0, 0, 192))
           .packet(kCmdData, data_packet(1, 0, 1, kOpWrite, 0, 400, 0, 0, 192))  // duplicate
           .tick(100000).w.str());
  save(h, "write-with-imm", FlowScript(64, 1, 1).packet(kCmdData, data_packet(0, 0, 0, kOpWrite, kFlagLast | kFlagImm, 64, 0, 0, 64)).tick(1000).w.str());
  save(h, "write-out-of-bounds", FlowScript(1000, 1, 0).packet(kCmdData, data_packet(0, 0, 0, kOpWrite, kFlagLast, 100, 0, 950, 100)).tick(1000).w.str());
  save(h, "write-read-only", FlowScript(1000, 1, 0).packet(kCmdData, data_packet(0, 0, 0, kOpWrite, kFlagLast, 10, 1, 0, 10)).tick(1000).w.str());
  save(h, "write-no-access", FlowScript(1000, 1, 0).packet(kCmdData, data_packet(0, 0, 0, kOpWrite, kFlagLast, 10, 2, 0, 10)).tick(1000).w.str());
  save(h, "write-foreign-key", FlowScript(1000, 1, 0).packet(kCmdData, data_packet(0, 0, 0, kOpWrite, kFlagLast, 10, 0x123400000000ull, 0, 10)).tick(1000).w.str());
  save(h, "message",
       FlowScript(64, 1, 0)
           .packet(kCmdData, data_packet(0, 0, 0, kOpSend, 0, 300, 7, 0, 192))
           .packet(kCmdData, data_packet(1, 0, 1, kOpSend, kFlagLast, 300, 7, 0, 108))
           .tick(1000).w.str());
  save(h, "read-request", FlowScript(512, 1, 0).packet(kCmdData, data_packet(0, 0, 0, kOpReadReq, kFlagLast, 300, 0, 8, 0)).tick(1000).tick(1000).w.str());
  save(h, "read-request-refused", FlowScript(512, 1, 0).packet(kCmdData, data_packet(0, 0, 0, kOpReadReq, kFlagLast, 300, 2, 0, 0)).tick(1000).w.str());
  save(h, "probe", FlowScript(64, 1, 0).packet(kCmdData, data_packet(0, 0, 0, kOpNop, kFlagLast, 0, 0, 0, 0)).tick(1000).w.str());
  // This side's operations and the peer's answers.
  save(h, "own-write-acked", FlowScript(64, 1, 0).submit(0, 100, 0x42, 0).tick(1000).packet(kCmdAck, ack_packet(1, 0, 0, {})).tick(1000).w.str());
  save(h, "own-write-sacked",
       FlowScript(64, 2, 0).submit(0, 2000, 0x42, 0).tick(1000)
           .packet(kCmdAck, ack_packet(0, 5, 0, {0x3e}))
           .packet(kCmdAck, ack_packet(2, 6, 0, {0x1f}))
           .tick(60'000'000).tick(1000).w.str());
  save(h, "own-write-refused",
       FlowScript(64, 1, 0).submit(0, 100, 0x42, 0).tick(1000)
           .packet(kCmdAck, ack_packet(1, 0, 1, {}))
           .packet(kCmdData, data_packet(0, 0, 0, kOpError, kFlagLast, 64, 0, kErrBounds, 0))
           .tick(1000).w.str());
  save(h, "own-read-answered",
       FlowScript(64, 1, 0).submit(2, 100, 0x42, 0).tick(1000)
           .packet(kCmdAck, ack_packet(1, 0, 0, {}))
           .packet(kCmdData, data_packet(0, 0, 0, kOpReadResp, kFlagLast, 100, 0, 0, 100))
           .tick(1000).w.str());
  save(h, "own-message-timeouts", FlowScript(64, 1, 2).submit(1, 5000, 9, 0).tick(1000).tick(40'000'000).tick(40'000'000).tick(40'000'000).w.str());
  save(h, "raw-stranger", FlowScript(64, 1, 0).packet(kCmdRaw, data_packet(0, 0, 0, kOpWrite, kFlagLast, 10, 0, 0, 10)).w.str());
}

void packet_seeds() {
  const char* h = "packet_decode";
  save(h, "write-last", data_packet(3, 1, 2, kOpWrite, kFlagLast, 1000, 5, 0, 100));
  save(h, "write-middle", data_packet(3, 1, 2, kOpWrite, 0, 1000, 5, 0, 100));
  save(h, "send", data_packet(0, 0, 0, kOpSend, kFlagLast, 10, 5, 0, 10));
  save(h, "read-request", data_packet(0, 0, 0, kOpReadReq, kFlagLast, 4096, 5, 0, 0));
  save(h, "read-response", data_packet(0, 0, 0, kOpReadResp, kFlagLast, 30, 5, 0, 30));
  save(h, "error", data_packet(0, 0, 0, kOpError, kFlagLast, 64, 5, kErrBounds, 0));
  save(h, "nop", data_packet(0, 0, 0, kOpNop, kFlagLast, 0, 0, 0, 0));
  save(h, "ack-short", ack_packet(10, 9, 0, {}));
  save(h, "ack-sack", ack_packet(10, 40, 1, {0xf0f0, 0, 1}));
  std::vector<uint64_t> full(kSackWords, ~0ull);
  save(h, "ack-full", ack_packet(1ull << 33, 5, 2, full));
}

void refusal_seeds() {
  const char* h = "refusal";
  // region length, flags, key (1: the region), offset, shift, length, shift, access, msg id, kind,
  // then response packets: want, requester kind, [total=want?, index, last?, payload length, payload].
  auto seed = [&](const char* name, uint64_t flags, uint64_t key, uint64_t off, uint64_t len, bool write) {
    ByteWriter w;
    w.in_range(0, 4096, 256).in_range(0, 3, flags).put(key).put(off).in_range(0, 63, 0).put(len).in_range(0, 63, 0);
    w.put(uint8_t(write)).put(uint64_t(7)).put(uint8_t(1)).put(uint64_t(0));
    w.in_range(0, 4096, 300).put(uint8_t(1));
    w.put(uint8_t(1)).put(uint32_t(0)).put(uint8_t(0)).in_range(0, 1500, 200).bytes(std::string(200, 'r').data(), 200);
    w.put(uint8_t(1)).put(uint32_t(1)).put(uint8_t(1)).in_range(0, 1500, 100).bytes(std::string(100, 's').data(), 100);
    save(h, name, w.str());
  };
  seed("read-inside", 3, 1, 16, 64, false);
  seed("write-inside", 3, 1, 0, 256, true);
  seed("read-past-end", 3, 1, 200, 64, false);
  seed("write-no-access", 2, 1, 0, 8, true);
  seed("stale-key", 3, 0, 0, 8, false);
}

void address_seeds() {
  save("udp_address", "one-port", encode_udp_address(0x0100007f, {htons(4791)}));
  save("udp_address", "four-ports", encode_udp_address(0x0200000a, {1, 2, 3, 4}));
  save("udp_address", "256-ports", encode_udp_address(0x0200000a, std::vector<uint16_t>(256, 7)));
}

void descriptor_seeds() {
  Descriptor d{};
  d.magic = kDescriptorMagic;
  d.secret = kSecret;
  d.rank = 1;
  d.world = 2;
  d.pid = 1234;
  d.fd = 5;
  d.segment_bytes = 1 << 20;
  std::strncpy(d.host, "0d2f9c1e-boot/pid:[4026531836]/net:[4026531840]", sizeof(d.host) - 1);
  save("descriptor", "shm-only", encode_descriptor(d, ""));
  const uint32_t nonce = kPeerNonce;
  const std::string tail = std::string(reinterpret_cast<const char*>(&nonce), 4) + encode_udp_address(0x0100007f, {1, 2});
  save("descriptor", "with-net", encode_descriptor(d, tail));
  std::memset(d.host, 'h', sizeof(d.host));  // no terminator
  save("descriptor", "host-unterminated", encode_descriptor(d, tail));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus dir>\n", argv[0]);
    return 2;
  }
  g_root = argv[1];
  flow_seeds();
  packet_seeds();
  refusal_seeds();
  address_seeds();
  descriptor_seeds();
  return 0;
}
