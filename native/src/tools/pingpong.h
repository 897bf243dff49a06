// A latency probe in the style of perftest's write_lat: ping-pong of
// writes-with-immediate between two endpoints, timed in native code so the
// figure is the transport's, not the interpreter's.
#pragma once
#include <cstdint>

#include "transport/endpoint.h"

namespace uccl {

// Returns the mean one-way latency in microseconds over `iters` round trips.
double pingpong_one_way_us(Endpoint& ep, int peer, bool initiator, uint64_t lkey, uint64_t rkey, uint64_t size,
                           int iters, int warmup);

}  // namespace uccl
