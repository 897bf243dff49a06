#include "common/errors.h"
#include "transport/net/cc/cubic.h"
#include "transport/net/cc/swift.h"

namespace uccl::net {

std::vector<std::string> cc_names() { return {"swift", "cubic"}; }

std::unique_ptr<CongestionControl> make_cc(const std::string& name, const CcParams& p) {
  if (name == "swift" || name.empty()) return std::make_unique<Swift>(p);
  if (name == "cubic") return std::make_unique<Cubic>(p);
  raise(ErrorKind::Argument, "UCCL_CC=", name, ": must be one of swift, cubic");
}

}  // namespace uccl::net
