// Limits of the net channel's packet math, in one place: NetTransport::create and
// the datapath enforce them, and uccl/config.py reads them (uccl._native.MIN_MTU, ...)
// to check UCCL_MTU and UCCL_NUM_PATHS at start-up.
#pragma once

namespace uccl {

constexpr int kMinMtu = 256;    // the 64-byte data header plus a useful payload
constexpr int kMaxMtu = 65000;  // one datagram (and one GSO train): the IPv4 limit less headers
constexpr int kMaxPaths = 256;  // the datapath opens one socket per path
// A message's bytes on the net channel. The receiver reassembles a message in memory
// sized by the total its first packet names; past this a peer's total is refused
// (one altered packet must not make the engine allocate without bound).
constexpr unsigned long long kMaxNetMessage = 1ull << 30;

}  // namespace uccl
