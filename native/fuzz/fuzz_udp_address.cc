// Fuzzes the net channel's address blob that each rank publishes at bootstrap
// (udp_datapath.h: decode_udp_address): no read past the blob, a decoded address
// names 1..256 queues, and it encodes back to the bytes it was read from.
#include <string>
#include <vector>

#include "fuzz_support.h"
#include "transport/net/datapath/udp_datapath.h"

using namespace uccl;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string blob(reinterpret_cast<const char*>(data), size);
  PeerAddress addr;
  if (!decode_udp_address(blob, &addr)) return 0;
  FUZZ_CHECK(addr.num_queues >= 1 && addr.num_queues <= 256);
  const std::vector<uint16_t> ports(addr.ports, addr.ports + addr.num_queues);
  const std::string again = encode_udp_address(addr.ipv4, ports);
  FUZZ_CHECK(again.size() <= blob.size() && blob.compare(0, again.size(), again) == 0);
  return 0;
}
