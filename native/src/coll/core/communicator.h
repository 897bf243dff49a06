// A communicator: a group of ranks that run collectives together over one
// endpoint. Calls are blocking on the calling thread, or queued to the
// communicator's worker thread (submit) for async use; either way they run in
// the order they were issued.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "coll/core/dtype.h"
#include "coll/core/call_info.h"
#include "coll/core/context.h"
#include "coll/core/links.h"
#include "coll/core/reg_cache.h"
#include "coll/core/topology.h"
#include "coll/core/tuner.h"
#include "coll/core/validate.h"
#include "transport/endpoint.h"

namespace uccl {

// The settings among the fields (algo, chunk_bytes, channels) are declared in
// uccl/config.py, which fills them; the defaults come from the header it generates.
struct CommConfig {
  std::string algo = defaults::algo;
  uint64_t chunk_bytes = defaults::chunk_size;  // 0: the tuner's choice
  int channels = int(defaults::channels);       // 0: the tuner's choice
  int slots = 4;
  uint64_t slot_bytes = 512 << 10;
  std::vector<TuneRule> rules;
  Topology topology;  // no levels: none known (flat algorithms only)
  std::string link;   // what carries the slowest level: "shm", "loopback", "network" ("": unknown)
};

// The state of one queued operation.
class Work {
 public:
  // True when finished; false if `timeout_s` passed first. Rethrows the op's error.
  bool wait(double timeout_s);
  bool test();
  void finish(std::exception_ptr error);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::exception_ptr error_;
};

class Communicator {
 public:
  Communicator(std::shared_ptr<Endpoint> ep, const CommConfig& cfg);
  ~Communicator();

  std::string local_keys() const { return links_.local_keys(); }
  void connect(const std::vector<std::string>& all_keys) { links_.connect(all_keys); }
  int rank() const { return ep_->rank(); }
  int world() const { return ep_->world(); }
  Endpoint& endpoint() { return *ep_; }

  // Each collective checks its arguments first (validate.h), then runs inline after the
  // calls issued before it (returning nullptr) or, with async_op, queued to the worker
  // thread (returning its Work). Counts and displacements are elements.
  std::shared_ptr<Work> all_reduce(const Buffer& in, const Buffer& out, ReduceOp op, bool async_op = false);
  // Only the root's output is written (other ranks' is unused).
  std::shared_ptr<Work> reduce(const Buffer& in, const Buffer& out, ReduceOp op, int root, bool async_op = false);
  std::shared_ptr<Work> broadcast(const Buffer& buf, int root, bool async_op = false);
  std::shared_ptr<Work> all_gather(const Buffer& in, const Buffer& out, bool async_op = false);
  // Displacements default to blocks packed one after another.
  std::shared_ptr<Work> all_gather_v(const Buffer& in, const Buffer& out, const SignedCounts& counts,
                                     const std::optional<SignedCounts>& displs, bool async_op = false);
  std::shared_ptr<Work> reduce_scatter(const Buffer& in, const Buffer& out, ReduceOp op, bool async_op = false);
  std::shared_ptr<Work> reduce_scatter_v(const Buffer& in, const Buffer& out, const SignedCounts& counts, ReduceOp op,
                                         bool async_op = false);
  std::shared_ptr<Work> all_to_all(const Buffer& in, const Buffer& out, bool async_op = false);
  std::shared_ptr<Work> all_to_all_v(const Buffer& in, const SignedCounts& send_counts,
                                     const std::optional<SignedCounts>& send_displs, const Buffer& out,
                                     const SignedCounts& recv_counts, const std::optional<SignedCounts>& recv_displs,
                                     bool async_op = false);
  // Only the root needs an output.
  std::shared_ptr<Work> gather(const Buffer& in, const std::optional<Buffer>& out, int root, bool async_op = false);
  // Only the root needs an input.
  std::shared_ptr<Work> scatter(const std::optional<Buffer>& in, const Buffer& out, int root, bool async_op = false);
  std::shared_ptr<Work> barrier(bool async_op = false);

  const Topology& topology() const { return cfg_.topology; }
  // What the tuner would pick for a call (for uccl.config() and tests).
  Tuner::Choice choice(const char* collective, uint64_t bytes);
  // What the tuner keys rules by: layered or flat, ranks per host, hosts per leaf, link.
  TuneShape tune_shape();

 private:
  // Runs `op` on the worker thread after everything issued before it.
  std::shared_ptr<Work> submit(std::function<void()> op);
  // Blocking calls go through here: they wait for queued work, then run inline.
  // `what` names the call in the error raised if the operations issued before it do
  // not finish within the configured timeout.
  void run_in_order(const std::function<void()>& op, const char* what);
  // Inline, or queued when async_op.
  template <typename Op>
  std::shared_ptr<Work> issue(const char* what, bool async_op, Op&& op);
  ArgCheck check(const char* op) const { return ArgCheck{rank(), world(), op}; }

  // The collectives on checked arguments; buffers are addresses of host memory.
  void run_all_reduce(uint64_t send, uint64_t recv, uint64_t count, DataType t, ReduceOp op);
  void run_reduce(uint64_t send, uint64_t recv, uint64_t count, DataType t, ReduceOp op, int root);
  void run_broadcast(uint64_t buf, uint64_t count, DataType t, int root);
  void run_all_gather_v(uint64_t send, uint64_t recv, const Counts& counts, const Counts& displs, DataType t);
  void run_reduce_scatter_v(uint64_t send, uint64_t recv, const Counts& counts, DataType t, ReduceOp op);
  // `tune_bytes`: the size the tuner sees, the same on every rank (all_to_all: the input;
  // all_to_all_v: UINT64_MAX, as ranks' sizes differ and their choices must not).
  void run_all_to_all_v(uint64_t send, const Counts& send_counts, const Counts& send_displs, uint64_t recv,
                        const Counts& recv_counts, const Counts& recv_displs, DataType t, uint64_t tune_bytes);
  void run_gather(uint64_t send, uint64_t recv, uint64_t count, DataType t, int root);
  void run_scatter(uint64_t send, uint64_t recv, uint64_t count, DataType t, int root);
  void run_barrier();

  uint64_t chunk_for(const Tuner::Choice& c, DataType t) const;
  template <typename Body>
  // `prefer`: the algorithm to use unless UCCL_ALGO names one for this collective.
  void collective(const CallInfo& call, uint64_t sig_seed, uint64_t bytes, Body&& body,
                  const char* prefer = nullptr);
  void worker_loop();
  Scratch scratch(uint64_t bytes);
  // Room in the shared arena that peers on this host read (published.h), kept
  // between calls; data nullptr when a peer is elsewhere or the arena is full.
  Scratch published(uint64_t bytes);
  void release_published();
  // "shm" when every peer is reached through shared memory, else "net" (fixed once connected).
  const std::string& transport();

  std::shared_ptr<Endpoint> ep_;
  CommConfig cfg_;
  Links links_;
  RegCache regs_;
  Tuner tuner_;
  WorkerPool pool_;
  uint32_t seq_ = 0;
  std::vector<char> workspace_;
  uint64_t workspace_key_ = 0;
  char* published_ = nullptr;
  uint64_t published_bytes_ = 0, published_key_ = 0;
  std::string transport_;
  int aggregates_ = -1;  // all_to_all_aggregates() for our topology, once known

  std::mutex q_mu_;
  std::condition_variable q_cv_;
  std::deque<std::pair<std::function<void()>, std::shared_ptr<Work>>> queue_;
  bool busy_ = false;  // an op is running (worker or inline)
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace uccl
