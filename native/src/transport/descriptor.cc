#include "transport/descriptor.h"

#include <cstring>

namespace uccl {

std::string encode_descriptor(const Descriptor& d, const std::string& net_tail) {
  return std::string(reinterpret_cast<const char*>(&d), sizeof(d)) + net_tail;
}

DescriptorCheck decode_descriptor(const std::string& bytes, int rank, int world, uint64_t secret, PeerDescriptor* out) {
  if (bytes.size() < sizeof(Descriptor)) return DescriptorCheck::kMalformed;
  std::memcpy(&out->d, bytes.data(), sizeof(Descriptor));
  const Descriptor& d = out->d;
  if (d.magic != kDescriptorMagic || d.rank != rank || d.world != world || d.secret != secret)
    return DescriptorCheck::kForeign;
  out->host.assign(d.host, strnlen(d.host, sizeof(d.host)));
  out->net_tail = bytes.substr(sizeof(Descriptor));
  return DescriptorCheck::kOk;
}

}  // namespace uccl
