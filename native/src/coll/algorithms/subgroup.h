// A subset of the communicator's ranks running one of the link-based algorithms
// (ring, recursive doubling, chain) as if it were a communicator of its own: the
// context's rank and world are positions in `members`, and the links translate
// positions back to ranks while the Subgroup lives. Hierarchical algorithms run
// their phases this way (inside a host, along a rail across hosts, ...). The
// direct algorithms address the endpoint themselves and are not run in a subgroup.
#pragma once
#include <algorithm>
#include <utility>
#include <vector>

#include "coll/core/context.h"

namespace uccl {

class Subgroup {
 public:
  // `members`: ranks of the communicator, the calling rank among them; `op` for the phase.
  Subgroup(const CollContext& whole, std::vector<int> members, ReduceOp op)
      : ctx_(whole), links_(whole.links), members_(std::move(members)) {
    ctx_.rank = int(std::find(members_.begin(), members_.end(), whole.rank) - members_.begin());
    ctx_.world = int(members_.size());
    ctx_.op = op;
    ctx_.channels = 1;
    previous_ = links_.set_view(members_);
  }
  ~Subgroup() { links_.set_view(std::move(previous_)); }
  Subgroup(const Subgroup&) = delete;
  Subgroup& operator=(const Subgroup&) = delete;

  CollContext& ctx() { return ctx_; }

 private:
  CollContext ctx_;
  Links& links_;
  std::vector<int> members_, previous_;
};

}  // namespace uccl
