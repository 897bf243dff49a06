// Factory for the net side. Until the UDP datapath lands, no net transport exists
// and connect() to a peer that needs one fails with a clear error.
#include "transport/net_transport.h"

namespace uccl {

std::unique_ptr<NetTransport> NetTransport::create(int, uint64_t, const NetConfig&, Doorbell*, RegionTable*) {
  return nullptr;
}

}  // namespace uccl
