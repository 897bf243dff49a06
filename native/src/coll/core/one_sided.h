// One-sided reads and writes into peers' windows for the direct algorithms.
// The shared-memory channel finishes each at once (one cross-memory copy); the net
// channel finishes later, so posted operations are collected and waited for together.
#pragma once
#include <cstdint>
#include <vector>

#include "coll/core/context.h"

namespace uccl {

class OneSided {
 public:
  explicit OneSided(CollContext& c) : c_(c) {}
  ~OneSided() {
    try {  // an error left operations in flight: they must not outlive the call's buffers
      wait_all();
    } catch (...) {
    }
  }

  void write(int peer, uint64_t lkey, uint64_t loff, uint64_t len, uint64_t rkey, uint64_t roff) {
    if (len) track(c_.ep.write(peer, lkey, loff, len, rkey, roff, false, 0));
  }
  void read(int peer, uint64_t lkey, uint64_t loff, uint64_t len, uint64_t rkey, uint64_t roff) {
    if (len) track(c_.ep.read(peer, lkey, loff, len, rkey, roff));
  }
  void wait_all() {
    while (!pending_.empty()) {
      uint64_t id = pending_.back();
      pending_.pop_back();
      c_.ep.wait(id, c_.ep.config().timeout_s);
    }
  }

 private:
  void track(const Endpoint::Posted& p) {
    if (!p.done) pending_.push_back(p.wr_id);
  }
  CollContext& c_;
  std::vector<uint64_t> pending_;
};

}  // namespace uccl
