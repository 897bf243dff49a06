#include "coll/core/communicator.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <string_view>

#include "coll/algorithms/algorithms.h"
#include "coll/core/published.h"
#include "common/errors.h"
#include "common/stream_copy.h"

namespace uccl {

namespace {

// FNV-1a over the call's arguments, folded to the 16 bits that ride in each immediate.
struct SigHash {
  uint64_t h = 1469598103934665603ull;
  SigHash& add(const void* p, size_t n) {
    auto* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
    return *this;
  }
  template <typename T>
  SigHash& add(const T& v) {
    return add(&v, sizeof(v));
  }
  SigHash& add(const std::string& s) { return add(s.data(), s.size()); }
  SigHash& add(const Counts& v) { return add(v.data(), v.size() * sizeof(uint64_t)); }
  uint16_t fold() const { return uint16_t(h ^ (h >> 16) ^ (h >> 32) ^ (h >> 48)); }
};

CallInfo call(const char* name, uint64_t count, DataType t) {
  CallInfo c;
  c.name = name;
  c.count = count;
  c.dtype = t;
  return c;
}
CallInfo call(const char* name, uint64_t count, DataType t, ReduceOp op, int root = -1) {
  CallInfo c = call(name, count, t);
  c.op = op;
  c.has_op = true;
  c.root = root;
  return c;
}
// Whether every rank has the same block, packed in rank order (what the hierarchical
// all_gather / reduce_scatter take; other layouts run flat).
bool equal_blocks(const Counts& counts, const Counts* displs) {
  for (size_t j = 0; j < counts.size(); ++j)
    if (counts[j] != counts[0] || (displs && (*displs)[j] != j * counts[0])) return false;
  return true;
}

CallInfo rooted(const char* name, uint64_t count, DataType t, int root) {
  CallInfo c = call(name, count, t);
  c.root = root;
  return c;
}

}  // namespace

bool Work::wait(double timeout_s) {
  std::unique_lock<std::mutex> lk(mu_);
  if (!cv_.wait_for(lk, std::chrono::duration<double>(timeout_s), [&] { return done_; })) return false;
  if (error_) std::rethrow_exception(error_);
  return true;
}

bool Work::test() {
  std::lock_guard<std::mutex> lk(mu_);
  if (done_ && error_) std::rethrow_exception(error_);
  return done_;
}

void Work::finish(std::exception_ptr error) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    done_ = true;
    error_ = std::move(error);
  }
  cv_.notify_all();
}

Communicator::Communicator(std::shared_ptr<Endpoint> ep, const CommConfig& cfg)
    : ep_(std::move(ep)),
      cfg_(cfg),
      links_(*ep_, LinkConfig{cfg.slots, cfg.slot_bytes}),
      regs_(*ep_),
      tuner_(cfg.rules, cfg.algo, cfg.chunk_bytes, cfg.channels, cfg.slot_bytes) {
  for (size_t k = 0; k < cfg_.topology.levels.size(); ++k) {
    const auto& level = cfg_.topology.levels[k];
    if (int(level.size()) != world())
      raise(ErrorKind::Argument, "rank ", rank(), ": topology level ", k, " names ", level.size(),
            " ranks for a world of ", world());
    for (int g : level)
      if (g < 0 || g >= world())
        raise(ErrorKind::Argument, "rank ", rank(), ": topology level ", k, " has group id ", g,
              " (must be in [0, world))");
  }
}

Communicator::~Communicator() {
  {
    std::lock_guard<std::mutex> lk(q_mu_);
    stopping_ = true;
  }
  q_cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  links_.drain(std::min(5.0, ep_->config().timeout_s));
  if (workspace_key_) {
    try {
      ep_->deregister_region(workspace_key_);
    } catch (...) {
    }
  }
  release_published();
}

const std::string& Communicator::transport() {
  if (transport_.empty()) {
    transport_ = "shm";
    for (int p = 0; p < world(); ++p)
      if (p != rank() && ep_->channel_kind(p) != "shm") transport_ = "net";
  }
  return transport_;
}

// With shared memory every peer's buffer is one copy away: the direct algorithms
// move each byte once. Over the net, rings and chains keep every link busy.
static const char* fallback_algo(const char* collective, const std::string& transport) {
  const std::string name(collective);
  if (name == "barrier") return "dissemination";
  if (name == "gather" || name == "scatter") return "direct";
  if (name == "reduce") return "chain";
  if (transport == "shm") return "direct";
  if (name == "all_to_all") return "pairwise";
  if (name == "broadcast") return "chain";
  return "ring";
}

TuneShape Communicator::tune_shape() {
  // With a topology whose groups meet over the network, large calls cross each slow
  // level once (hierarchical); measured rules for this shape still win.
  const bool layered = transport() == "net" && cfg_.topology.structured();
  const auto& t = cfg_.topology;
  return TuneShape{layered ? "layered" : "flat", t.groups_in(0), t.levels.size() > 1 ? t.groups_in(1) : 1, cfg_.link};
}

Tuner::Choice Communicator::choice(const char* collective, uint64_t bytes) {
  TuneShape shape = tune_shape();
  // all_to_all aggregates per host, so for it the shape that counts is several ranks per host.
  if (std::strcmp(collective, "all_to_all") == 0) {
    if (aggregates_ < 0) aggregates_ = all_to_all_aggregates(cfg_.topology, rank(), world());
    shape.topology = transport() == "net" && aggregates_ == 1 ? "layered" : "flat";
  }
  return tuner_.choose(collective, world(), transport(), bytes, fallback_algo(collective, transport()), shape);
}

uint64_t Communicator::chunk_for(const Tuner::Choice& c, DataType t) const {
  uint64_t es = dtype_size(t);
  uint64_t chunk = c.chunk_bytes ? c.chunk_bytes : cfg_.slot_bytes;
  if (chunk > cfg_.slot_bytes) chunk = cfg_.slot_bytes;
  chunk -= chunk % es;
  return chunk < es ? es : chunk;
}

Scratch Communicator::published(uint64_t bytes) {
  if (transport() != "shm") return Scratch{nullptr, 0};
  if (published_bytes_ < bytes) {
    release_published();
    published_ = static_cast<char*>(ep_->alloc_shared(bytes));
    if (!published_) return Scratch{nullptr, 0};  // the arena is full: peers get writes instead
    published_bytes_ = bytes;
    published_key_ = ep_->register_region(uint64_t(published_), bytes, kRemoteRead | kRemoteWrite);
  }
  return Scratch{published_, published_key_};
}

void Communicator::release_published() {
  if (!published_) return;
  try {
    ep_->deregister_region(published_key_);
  } catch (...) {
  }
  ep_->free_shared(published_);
  published_ = nullptr, published_bytes_ = 0, published_key_ = 0;
}

Scratch Communicator::scratch(uint64_t bytes) {
  if (workspace_.size() < bytes || !workspace_key_) {
    if (workspace_key_) ep_->deregister_region(workspace_key_);
    workspace_key_ = 0;
    workspace_.resize(bytes ? bytes : 1);
    workspace_key_ = ep_->register_region(uint64_t(workspace_.data()), workspace_.size(), 0);
  }
  return Scratch{workspace_.data(), workspace_key_, workspace_.size()};
}

template <typename Body>
void Communicator::collective(const CallInfo& info, uint64_t sig_seed, uint64_t bytes, Body&& body,
                              const char* prefer) {
  Tuner::Choice ch = choice(info.name, bytes);
  if (prefer && !tuner_.forced(info.name)) ch.algo = prefer;
  // The algorithm is part of the signature: ranks that chose differently (say,
  // different UCCL_ALGO) are told so instead of waiting for each other.
  SigHash sig;
  sig.add(info.name, std::strlen(info.name)).add(sig_seed).add(info.dtype).add(info.op).add(info.root);
  sig.add(ch.algo, std::strlen(ch.algo));
  links_.begin(++seq_, sig.fold(), info);
  CollContext c{*ep_,     links_,  rank(), world(), chunk_for(ch, info.dtype), info.dtype, info.op,
                dtype_size(info.dtype), ch.channels, &pool_};
  try {
    body(c, std::string_view(ch.algo));
    // Rooted calls and all_to_all: a rank's own result does not prove that its peers
    // accepted what it sent, so it waits for their credits (which carry their verdict).
    if (info.root >= 0 || std::strcmp(info.name, "all_to_all") == 0) links_.finish();
  } catch (const Error& e) {
    // Name the collective in transport errors; the links stay broken afterwards.
    std::string label = info.str(), msg = e.what(), prefix = format_msg("rank ", rank(), ": ");
    if (msg.find(label) == std::string::npos)
      msg = prefix + label + ": " + (msg.rfind(prefix, 0) == 0 ? msg.substr(prefix.size()) : msg);
    ErrorKind kind = e.kind();
    if (kind != ErrorKind::PeerFailure) {
      // A live peer that gave up because another rank died fails us in its own way (its
      // regions gone, its links closed): the dead rank is the cause worth naming.
      std::vector<int> dead = ep_->dead_peers();
      if (!dead.empty()) {
        std::string ranks;
        for (int p : dead) ranks += (ranks.empty() ? "" : ", ") + std::to_string(p);
        msg += format_msg("; rank", dead.size() > 1 ? "s " : " ", ranks, dead.size() > 1 ? " have" : " has",
                          " died");
        kind = ErrorKind::PeerFailure;
      }
    }
    links_.mark_broken(msg);
    throw Error(kind, msg);
  }
}

void Communicator::run_all_reduce(uint64_t send, uint64_t recv, uint64_t count, DataType t, ReduceOp op) {
  uint64_t bytes = count * dtype_size(t);
  collective(call("all_reduce", count, t, op), SigHash().add(count).h, bytes, [&](CollContext& c, std::string_view algo) {
    LocalBuffer in(regs_, reinterpret_cast<void*>(send), bytes), out(regs_, reinterpret_cast<void*>(recv), bytes);
    if (c.world == 1) {
      if (send != recv) move_out(out.at(0), in.at(0), bytes, bytes);
    } else if (algo == "recursive_doubling") {
      all_reduce_recursive_doubling(c, in, out, count);
    } else if (algo == "hierarchical") {
      all_reduce_hierarchical(c, cfg_.topology, regs_, in, out, count,
                              scratch(all_reduce_hierarchical_scratch_bytes(cfg_.topology, c.rank, c.world, bytes,
                                                                            c.esize, c.chunk)));
    } else if (algo == "direct") {
      all_reduce_direct(c, in, out, count, scratch(2 * c.chunk * uint64_t(c.channels)),
                        published(PublishedShape{c.chunk, c.channels, c.world, kPublishedSlots}.bytes()));
    } else {
      all_reduce_ring(c, in, out, count, scratch(c.chunk));
    }
  });
}

void Communicator::run_reduce(uint64_t send, uint64_t recv, uint64_t count, DataType t, ReduceOp op, int root) {
  uint64_t bytes = count * dtype_size(t);
  collective(call("reduce", count, t, op, root), SigHash().add(count).h, bytes,
             [&](CollContext& c, std::string_view algo) {
               LocalBuffer in(regs_, reinterpret_cast<void*>(send), bytes);
               LocalBuffer out(regs_, reinterpret_cast<void*>(rank() == root ? recv : send), bytes);
               // 3 bytes holds when each level divides the count; rounding up (a count of 1
               // is never divided) costs up to 2 more elements per level.
               const uint64_t rounding = 2 * c.esize * cfg_.topology.levels.size();
               if (algo == "hierarchical")
                 reduce_hierarchical(
                     c, cfg_.topology, regs_, in, out, count, root,
                     scratch(hierarchical_scratch_bytes(bytes, c.esize, c.chunk) + 3 * bytes + rounding));
               else
                 reduce_chain(c, in, out, count, root);
             });
}

void Communicator::run_broadcast(uint64_t buf, uint64_t count, DataType t, int root) {
  uint64_t bytes = count * dtype_size(t);
  collective(rooted("broadcast", count, t, root), SigHash().add(count).h, bytes,
             [&](CollContext& c, std::string_view algo) {
               LocalBuffer b(regs_, reinterpret_cast<void*>(buf), bytes);
               if (c.world == 1) return;
               if (algo == "hierarchical")
                 broadcast_hierarchical(c, cfg_.topology, regs_, b, count, root);
               else if (algo == "direct")
                 broadcast_direct(c, b, count, root);
               else
                 broadcast_chain(c, b, count, root);
             });
}

void Communicator::run_all_gather_v(uint64_t send, uint64_t recv, const Counts& counts,
                                const Counts& displs, DataType t) {
  uint64_t es = dtype_size(t), total = 0, extent = 0;
  for (int j = 0; j < world(); ++j) {
    total += counts[size_t(j)];
    extent = std::max(extent, displs[size_t(j)] + counts[size_t(j)]);
  }
  collective(call("all_gather", total, t), SigHash().add(counts).add(displs).h, total * es,
             [&](CollContext& c, std::string_view algo) {
               LocalBuffer in(regs_, reinterpret_cast<void*>(send), counts[size_t(rank())] * es);
               LocalBuffer out(regs_, reinterpret_cast<void*>(recv), extent * es);
               if (algo == "hierarchical" && equal_blocks(counts, &displs))
                 all_gather_hierarchical(c, cfg_.topology, regs_, in, out, counts[0],
                                         scratch(3 * total * es));
               else if (algo == "direct" && c.world > 1)
                 all_gather_direct(c, in, out, counts, displs);
               else
                 all_gather_ring(c, in, out, counts, displs);
             });
}

void Communicator::run_reduce_scatter_v(uint64_t send, uint64_t recv, const Counts& counts, DataType t,
                                    ReduceOp op) {
  uint64_t es = dtype_size(t), total = 0, max_block = 0;
  for (auto n : counts) {
    total += n;
    max_block = std::max(max_block, n);
  }
  collective(call("reduce_scatter", total, t, op), SigHash().add(counts).h, total * es,
             [&](CollContext& c, std::string_view algo) {
               LocalBuffer in(regs_, reinterpret_cast<void*>(send), total * es);
               LocalBuffer out(regs_, reinterpret_cast<void*>(recv), counts[size_t(rank())] * es);
               if (algo == "hierarchical" && equal_blocks(counts, nullptr))
                 reduce_scatter_hierarchical(
                     c, cfg_.topology, regs_, in, out, counts[0],
                     scratch(hierarchical_scratch_bytes(total * es, c.esize, c.chunk) + 3 * total * es));
               else if (algo == "direct" && c.world > 1)
                 reduce_scatter_direct(c, in, out, counts, scratch(2 * c.chunk * uint64_t(c.channels)));
               else
                 reduce_scatter_ring(c, in, out, counts, scratch(2 * max_block * es));
             });
}

void Communicator::run_all_to_all_v(uint64_t send, const Counts& send_counts,
                                const Counts& send_displs, uint64_t recv,
                                const Counts& recv_counts, const Counts& recv_displs,
                                DataType t, uint64_t tune_bytes) {
  uint64_t es = dtype_size(t), in_extent = 0, out_extent = 0, total = 0;
  for (int j = 0; j < world(); ++j) {
    in_extent = std::max(in_extent, send_displs[size_t(j)] + send_counts[size_t(j)]);
    out_extent = std::max(out_extent, recv_displs[size_t(j)] + recv_counts[size_t(j)]);
    total += send_counts[size_t(j)];
  }
  // Per-rank sizes differ legitimately; each chunk's length is checked against what its receiver expects.
  // In place (MPI too asks every rank to be in place, or none), both algorithms copy the input
  // aside first, except the pairwise exchange between two ranks: that is used then.
  const bool in_place = send < recv + out_extent * es && recv < send + in_extent * es;
  collective(call("all_to_all", total, t), 0, tune_bytes, [&](CollContext& c, std::string_view algo) {
    LocalBuffer in(regs_, reinterpret_cast<void*>(send), in_extent * es);
    LocalBuffer out(regs_, reinterpret_cast<void*>(recv), out_extent * es);
    if (algo == "aggregated" && all_to_all_aggregates(cfg_.topology, rank(), world())) {
      all_to_all_aggregated(c, cfg_.topology, in, out, send_counts, send_displs, recv_counts, recv_displs,
                            [this](uint64_t b) { return scratch(b); });
      return;
    }
    const bool direct = algo == "direct" && c.world > 1;
    Scratch staging{nullptr, 0};
    if (in_place && (direct || c.world > 2)) staging = scratch(in_extent * es);
    if (direct)
      all_to_all_direct(c, in, in_extent * es, out, out_extent * es, send_counts, send_displs, recv_counts,
                        recv_displs, staging);
    else
      all_to_all_pairwise(c, in, in_extent * es, out, send_counts, send_displs, recv_counts, recv_displs, staging);
  }, in_place && world() == 2 ? "pairwise" : nullptr);
}

void Communicator::run_gather(uint64_t send, uint64_t recv, uint64_t count, DataType t, int root) {
  uint64_t es = dtype_size(t);
  collective(rooted("gather", count, t, root), SigHash().add(count).h, count * es,
             [&](CollContext& c, std::string_view) {
               LocalBuffer in(regs_, reinterpret_cast<void*>(send), count * es);
               LocalBuffer out(regs_, reinterpret_cast<void*>(rank() == root ? recv : send),
                               rank() == root ? count * es * uint64_t(world()) : count * es);
               gather_direct(c, in, out, count, root);
             });
}

void Communicator::run_scatter(uint64_t send, uint64_t recv, uint64_t count, DataType t, int root) {
  uint64_t es = dtype_size(t);
  collective(rooted("scatter", count, t, root), SigHash().add(count).h, count * es,
             [&](CollContext& c, std::string_view) {
               LocalBuffer in(regs_, reinterpret_cast<void*>(rank() == root ? send : recv),
                              rank() == root ? count * es * uint64_t(world()) : count * es);
               LocalBuffer out(regs_, reinterpret_cast<void*>(recv), count * es);
               scatter_direct(c, in, out, count, root);
             });
}

void Communicator::run_barrier() {
  collective(call("barrier", 0, DataType::Uint8), 0, 0,
             [&](CollContext& c, std::string_view) { barrier_dissemination(c); });
}

template <typename Op>
std::shared_ptr<Work> Communicator::issue(const char* what, bool async_op, Op&& op) {
  if (async_op) return submit(std::forward<Op>(op));
  run_in_order(std::ref(op), what);  // by reference: runs before returning, nothing to copy
  return nullptr;
}

std::shared_ptr<Work> Communicator::all_reduce(const Buffer& in, const Buffer& out, ReduceOp op, bool async_op) {
  check_all_reduce(check("all_reduce"), in, out, op);
  return issue("all_reduce", async_op, [this, in, out, op] { run_all_reduce(in.addr, out.addr, in.count, in.dtype, op); });
}

std::shared_ptr<Work> Communicator::reduce(const Buffer& in, const Buffer& out, ReduceOp op, int root, bool async_op) {
  check_reduce(check("reduce"), in, out, op, root);
  return issue("reduce", async_op, [this, in, out, op, root] { run_reduce(in.addr, out.addr, in.count, in.dtype, op, root); });
}

std::shared_ptr<Work> Communicator::broadcast(const Buffer& buf, int root, bool async_op) {
  check_broadcast(check("broadcast"), root);
  return issue("broadcast", async_op, [this, buf, root] { run_broadcast(buf.addr, buf.count, buf.dtype, root); });
}

std::shared_ptr<Work> Communicator::all_gather(const Buffer& in, const Buffer& out, bool async_op) {
  check_all_gather(check("all_gather"), in, out);
  const size_t W = size_t(world());
  Counts counts(W, in.count), displs(W);
  for (size_t j = 0; j < W; ++j) displs[j] = j * in.count;
  return issue("all_gather", async_op, [this, in, out, counts = std::move(counts), displs = std::move(displs)] {
    run_all_gather_v(in.addr, out.addr, counts, displs, in.dtype);
  });
}

std::shared_ptr<Work> Communicator::all_gather_v(const Buffer& in, const Buffer& out, const SignedCounts& counts,
                                                 const std::optional<SignedCounts>& displs, bool async_op) {
  Layout l = check_all_gather_v(check("all_gather_v"), in, out, counts, displs);
  return issue("all_gather_v", async_op, [this, in, out, l = std::move(l)] {
    run_all_gather_v(in.addr, out.addr, l.counts, l.displs, in.dtype);
  });
}

std::shared_ptr<Work> Communicator::reduce_scatter(const Buffer& in, const Buffer& out, ReduceOp op, bool async_op) {
  check_reduce_scatter(check("reduce_scatter"), in, out, op);
  return issue("reduce_scatter", async_op, [this, in, out, op, counts = Counts(size_t(world()), out.count)] {
    run_reduce_scatter_v(in.addr, out.addr, counts, in.dtype, op);
  });
}

std::shared_ptr<Work> Communicator::reduce_scatter_v(const Buffer& in, const Buffer& out, const SignedCounts& counts,
                                                     ReduceOp op, bool async_op) {
  Counts c = check_reduce_scatter_v(check("reduce_scatter_v"), in, out, counts, op);
  return issue("reduce_scatter_v", async_op, [this, in, out, op, c = std::move(c)] {
    run_reduce_scatter_v(in.addr, out.addr, c, in.dtype, op);
  });
}

std::shared_ptr<Work> Communicator::all_to_all(const Buffer& in, const Buffer& out, bool async_op) {
  check_all_to_all(check("all_to_all"), in, out);
  const size_t W = size_t(world());
  const uint64_t block = in.count / W;
  Counts counts(W, block), displs(W);
  for (size_t j = 0; j < W; ++j) displs[j] = j * block;
  return issue("all_to_all", async_op, [this, in, out, counts = std::move(counts), displs = std::move(displs)] {
    run_all_to_all_v(in.addr, counts, displs, out.addr, counts, displs, in.dtype, in.count * dtype_size(in.dtype));
  });
}

std::shared_ptr<Work> Communicator::all_to_all_v(const Buffer& in, const SignedCounts& send_counts,
                                                 const std::optional<SignedCounts>& send_displs, const Buffer& out,
                                                 const SignedCounts& recv_counts,
                                                 const std::optional<SignedCounts>& recv_displs, bool async_op) {
  std::pair<Layout, Layout> l =
      check_all_to_all_v(check("all_to_all_v"), in, send_counts, send_displs, out, recv_counts, recv_displs);
  return issue("all_to_all_v", async_op, [this, in, out, l = std::move(l)] {
    run_all_to_all_v(in.addr, l.first.counts, l.first.displs, out.addr, l.second.counts, l.second.displs, in.dtype,
                     UINT64_MAX);
  });
}

std::shared_ptr<Work> Communicator::gather(const Buffer& in, const std::optional<Buffer>& out, int root,
                                           bool async_op) {
  check_gather(check("gather"), in, out, root);
  uint64_t recv = rank() == root ? out->addr : in.addr;
  return issue("gather", async_op, [this, in, out, recv, root] {  // `out` keeps the root's output alive
    run_gather(in.addr, recv, in.count, in.dtype, root);
  });
}

std::shared_ptr<Work> Communicator::scatter(const std::optional<Buffer>& in, const Buffer& out, int root,
                                            bool async_op) {
  check_scatter(check("scatter"), in, out, root);
  uint64_t send = rank() == root ? in->addr : out.addr;
  return issue("scatter", async_op, [this, in, send, out, root] {  // `in` keeps the root's input alive
    run_scatter(send, out.addr, out.count, out.dtype, root);
  });
}

std::shared_ptr<Work> Communicator::barrier(bool async_op) {
  return issue("barrier", async_op, [this] { run_barrier(); });
}

std::shared_ptr<Work> Communicator::submit(std::function<void()> op) {
  auto work = std::make_shared<Work>();
  {
    std::lock_guard<std::mutex> lk(q_mu_);
    queue_.emplace_back(std::move(op), work);
    if (!worker_.joinable()) worker_ = std::thread([this] { worker_loop(); });
  }
  q_cv_.notify_all();
  return work;
}

void Communicator::run_in_order(const std::function<void()>& op, const char* what) {
  {
    std::unique_lock<std::mutex> lk(q_mu_);
    const size_t earlier = queue_.size() + (busy_ ? 1 : 0);
    const auto limit = std::chrono::duration<double>(ep_->config().timeout_s);
    if (!q_cv_.wait_for(lk, limit, [&] { return queue_.empty() && !busy_; }))
      raise(ErrorKind::Timeout, "rank ", rank(), ": ", what, ": the ", earlier,
            " operation(s) issued before it on this communicator did not finish within ", limit.count(), " s");
    busy_ = true;
  }
  auto done = [this] {
    {
      std::lock_guard<std::mutex> lk(q_mu_);
      busy_ = false;
    }
    q_cv_.notify_all();
  };
  try {
    op();
  } catch (...) {
    done();
    throw;
  }
  done();
}

void Communicator::worker_loop() {
  std::unique_lock<std::mutex> lk(q_mu_);
  for (;;) {
    q_cv_.wait(lk, [&] { return stopping_ || (!queue_.empty() && !busy_); });
    if (queue_.empty()) return;  // stopping, nothing left
    auto item = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    lk.unlock();
    std::exception_ptr error;
    try {
      item.first();
    } catch (...) {
      error = std::current_exception();
    }
    item.first = nullptr;  // done with the caller's buffers: release them before the Work completes
    lk.lock();
    busy_ = false;
    q_cv_.notify_all();
    lk.unlock();
    item.second->finish(error);
    lk.lock();
  }
}

}  // namespace uccl
