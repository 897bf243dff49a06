// Fuzzes the endpoint descriptor a peer publishes at bootstrap (descriptor.h) and
// the net tail it carries, read as NetTransport::connect reads it (the peer's
// instance nonce, then its datapath address): no read past the bytes, the host
// identity never runs past its field, and what is accepted round-trips.
#include <cstring>
#include <string>

#include "fuzz_support.h"
#include "transport/descriptor.h"
#include "transport/net/datapath/udp_datapath.h"

using namespace uccl;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  // The checked identity fields come from the input when it is long enough to hold them.
  Descriptor probe{};
  std::memcpy(&probe, bytes.data(), std::min(size, sizeof(probe)));
  PeerDescriptor peer;
  const DescriptorCheck check = decode_descriptor(bytes, probe.rank, probe.world, probe.secret, &peer);
  if (size < sizeof(Descriptor)) {
    FUZZ_CHECK(check == DescriptorCheck::kMalformed);
    return 0;
  }
  if (check != DescriptorCheck::kOk) {
    FUZZ_CHECK(check == DescriptorCheck::kForeign && probe.magic != kDescriptorMagic);
    return 0;
  }
  FUZZ_CHECK(peer.host.size() < sizeof(peer.d.host) + 1);
  FUZZ_CHECK(encode_descriptor(peer.d, peer.net_tail) == bytes);
  // The net tail: the peer's instance nonce, then its datapath address.
  if (peer.net_tail.size() >= 4) {
    PeerAddress addr;
    if (decode_udp_address(peer.net_tail.substr(4), &addr)) FUZZ_CHECK(addr.num_queues >= 1);
  }
  return 0;
}
