// The lanes of a pipelined hierarchical call. The vector is cut into pieces; each level
// of the topology runs on a thread of its own (a lane) and passes each piece's shard to
// the lane of the level above (its rail) through a PieceFeed, so every level's links
// carry one piece while the levels below work on the pieces before and after it. Lanes
// talk to disjoint peers (a rail's ranks are all in other groups) and take pieces in
// order, so the messages on every link keep one order whatever the timing.
#pragma once
#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "coll/core/links.h"
#include "common/errors.h"

namespace uccl {

// Part of the vector at one level: `count` elements from src, the result into dst.
struct PieceView {
  const char* src = nullptr;
  char* dst = nullptr;
  uint64_t count = 0;
};

// One lane hands pieces over to the next and takes them back done, in order. Every wait
// is bounded by `timeout_s`.
class PieceFeed {
 public:
  PieceFeed(size_t pieces, double timeout_s) : views_(pieces), timeout_(timeout_s) {}

  size_t pieces() const { return views_.size(); }

  // Upstream: piece p is ready.
  void hand_over(size_t p, const PieceView& v) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      views_[p] = v;
      ready_ = p + 1;
    }
    cv_.notify_all();
  }
  // Downstream: waits for piece p; false if upstream stopped (it reports why).
  bool next(size_t p, PieceView* v) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::duration<double>(timeout_), [&] { return ready_ > p || stopped_; }))
      raise(ErrorKind::Timeout, "hierarchical: piece ", p, " was not handed over within ", timeout_, " s");
    if (stopped_) return false;
    *v = views_[p];
    return true;
  }
  // Downstream: piece p's result is in its dst.
  void done(size_t p) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = p + 1;
    }
    cv_.notify_all();
  }
  // Upstream: waits until piece p is done; rethrows downstream's error.
  void wait_done(size_t p) {
    std::unique_lock<std::mutex> lock(mu_);
    const bool ok = cv_.wait_for(lock, std::chrono::duration<double>(timeout_),
                                 [&] { return done_ > p || error_ != nullptr; });
    if (error_) std::rethrow_exception(error_);
    if (!ok) raise(ErrorKind::Timeout, "hierarchical: piece ", p, " was not done within ", timeout_, " s");
  }
  bool all_done() {
    std::lock_guard<std::mutex> lock(mu_);
    return done_ == views_.size();
  }
  void fail(std::exception_ptr e) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = e;
    }
    cv_.notify_all();
  }
  std::exception_ptr error() {
    std::lock_guard<std::mutex> lock(mu_);
    return error_;
  }
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopped_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<PieceView> views_;
  const double timeout_;
  size_t ready_ = 0, done_ = 0;
  bool stopped_ = false;
  std::exception_ptr error_;
};

// A thread running run(feed) for the level above. Its failure marks the links broken
// (ending the other lanes' waits) and is rethrown by the feed's wait_done; a lane left
// unfinished (the lane below failed) is stopped the same way before it is joined.
class Lane {
 public:
  Lane(Links& links, PieceFeed& feed, std::function<void(PieceFeed&)> run)
      : links_(links), feed_(feed), run_(std::move(run)), thread_([this] { body(); }) {}
  ~Lane() {
    if (!feed_.all_done() && !feed_.error()) {
      feed_.stop();
      links_.mark_broken("hierarchical: stopped because another lane of this rank failed");
    }
    thread_.join();
  }
  Lane(const Lane&) = delete;
  Lane& operator=(const Lane&) = delete;

 private:
  void body() {
    try {
      run_(feed_);
    } catch (const std::exception& e) {
      links_.mark_broken(e.what());
      feed_.fail(std::current_exception());
    }
  }

  Links& links_;
  PieceFeed& feed_;
  std::function<void(PieceFeed&)> run_;
  std::thread thread_;  // last: starts once the rest is set up
};

}  // namespace uccl
