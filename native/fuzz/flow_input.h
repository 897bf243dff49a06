// The input format of fuzz_flow_receive (read with ByteReader, written by make_corpus.cc):
//   set-up:   in_range(1, kMaxRegion) writable region length, in_range(1, kMaxFlowPaths) paths,
//             in_range(0, 2) MTU (kMtus), in_range(0, 255) congestion control (cc_names())
//   commands: in_range(0, kNumCmds - 1) Cmd, then its fields:
//     kCmdData, kCmdAck, kCmdRaw: in_range(0, kMaxPacket) length, that many bytes (the datagram;
//                                 Data and Ack get a valid common header of their type, and a
//                                 data packet's `a` below kNumRegions names a registered region)
//     kCmdSubmit: in_range(0, 2) write/send/read, in_range(0, kMaxOpBytes) length,
//                 uint64 a (key or tag), in_range(0, kMaxRegion) remote offset
//     kCmdTick:   in_range(0, kMaxTickNs) nanoseconds that pass
#pragma once
#include <cstdint>

namespace uccl::fuzz {

enum Cmd : uint8_t { kCmdData, kCmdAck, kCmdRaw, kCmdSubmit, kCmdTick, kNumCmds };
constexpr uint64_t kMaxRegion = 4096;  // the writable region's length, and remote offsets
constexpr uint64_t kMaxFlowPaths = 4;
constexpr uint32_t kMtus[3] = {256, 1024, 1472};
constexpr uint64_t kMaxPacket = 2048;
constexpr uint64_t kMaxOpBytes = 8192;
constexpr uint64_t kMaxTickNs = 50'000'000;
constexpr int kMaxSteps = 256;
constexpr uint64_t kNumRegions = 3;  // writable, read-only, no access (in that order)

// The connection the flow stands for.
constexpr int kMe = 0, kPeer = 1;
constexpr uint32_t kMyNonce = 0x1111, kPeerNonce = 0x2222;
constexpr uint64_t kSecret = 0x5ec12e7;

}  // namespace uccl::fuzz
