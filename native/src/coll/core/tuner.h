// Picks an algorithm and chunk size per call (collective, world size, transport, size). Rules come from measurements
// (perf/tune.py writes them; uccl/collectives/tuning.json ships them) and can be
// overridden (UCCL_ALGO, UCCL_CHUNK_SIZE).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace uccl {

struct TuneRule {
  std::string collective;  // "all_reduce", ...
  int world = 0;           // 0: any world size
  uint64_t max_bytes = 0;  // rule applies to calls of at most this many bytes
  std::string algo;
  uint64_t chunk_bytes = 0;  // 0: the default chunk
  std::string transport;     // "shm", "net", or "" for either
  int channels = 0;          // 0: one
  std::string topology;      // "layered" (a topology whose groups meet over the net), "flat", or "" for either
  // The topology's shape and what carries its slowest level; 0 / "" for any. A rule that
  // names more of them is more specific and is tried before the rules that name fewer.
  int ranks_per_host = 0;  // the largest host's ranks
  int hosts_per_leaf = 0;  // the largest leaf's hosts (1 with no leaf level)
  std::string link;        // "network" (other machines or namespaces), "loopback" (hosts on one machine)
};

// What the tuner knows of a communicator's topology (Communicator::choice fills it).
struct TuneShape {
  std::string topology = "flat";  // "layered" or "flat", as TuneRule::topology
  int ranks_per_host = 0;
  int hosts_per_leaf = 0;
  std::string link;
};

class Tuner {
 public:
  // Throws if `forced_algo` is neither "", "auto" nor one of algorithms().
  Tuner(std::vector<TuneRule> rules, std::string forced_algo, uint64_t forced_chunk, int forced_channels,
        uint64_t default_chunk);

  struct Choice {
    const char* algo;  // points into the rules or the caller's literal: no copy per call
    uint64_t chunk_bytes;
    int channels;
  };
  // `transport` is "shm" when every peer is reached through shared memory, else
  // "net"; `fallback` is the algorithm used when no rule matches. `shape.topology` is
  // "layered" when the communicator knows a topology whose groups meet over the
  // network: then rules measured for it decide, else calls of kLayeredMinBytes and
  // more go hierarchical, where the collective has that algorithm, and all_to_all calls of
  // at most kAggregatedMaxBytes go aggregated. UCCL_ALGO=flat
  // takes the choice as if there were no topology. Rules keyed by the shape or the
  // link apply only where those match, before the rules that are not.
  Choice choose(const char* collective, int world, const std::string& transport, uint64_t bytes,
                const char* fallback, const TuneShape& shape = TuneShape()) const;
  static constexpr uint64_t kLayeredMinBytes = 512 << 10;
  // all_to_all: calls up to this size (per rank; measured crossover 32-64 KiB on the fabric,
  // perf/alltoall_topo.py) go aggregated per host where the topology
  // is "layered" (for all_to_all: hosts of equal size, several ranks each, over the network).
  static constexpr uint64_t kAggregatedMaxBytes = 32 << 10;

  // Whether `collective` has an algorithm called `algo` (UCCL_ALGO applies only there).
  static bool implements(const char* collective, const std::string& algo);
  // Every algorithm name some collective has (what UCCL_ALGO may name besides "auto").
  static std::vector<std::string> algorithms();
  // Whether UCCL_ALGO decides for `collective`.
  bool forced(const char* collective) const {
    return !forced_algo_.empty() && forced_algo_ != "auto" && forced_algo_ != "flat" &&
           implements(collective, forced_algo_);
  }

 private:
  std::vector<TuneRule> rules_;
  std::string forced_algo_;
  uint64_t forced_chunk_;
  int forced_channels_;
  uint64_t default_chunk_;
};

}  // namespace uccl
