#include "coll/core/worker_pool.h"

namespace uccl {

WorkerPool::~WorkerPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
}

void WorkerPool::run(int n, const std::function<void(int)>& fn) {
  if (n <= 1) {
    fn(0);
    return;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    while (int(threads_.size()) < n - 1) {
      int index = int(threads_.size()) + 1;
      threads_.emplace_back([this, index] { helper_loop(index); });
    }
    job_ = &fn;
    job_width_ = n;
    running_ = n - 1;
    error_ = nullptr;
    ++generation_;
  }
  wake_.notify_all();
  std::exception_ptr mine;
  try {
    fn(0);
  } catch (...) {
    mine = std::current_exception();
  }
  std::unique_lock<std::mutex> lk(mu_);
  done_.wait(lk, [&] { return running_ == 0; });
  job_ = nullptr;
  if (mine) std::rethrow_exception(mine);
  if (error_) std::rethrow_exception(error_);
}

void WorkerPool::helper_loop(int index) {
  unsigned long seen = 0;
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    wake_.wait(lk, [&] { return stopping_ || generation_ != seen; });
    if (stopping_) return;
    seen = generation_;
    if (index >= job_width_) continue;  // this call uses fewer helpers
    const auto* job = job_;
    lk.unlock();
    std::exception_ptr error;
    try {
      (*job)(index);
    } catch (...) {
      error = std::current_exception();
    }
    lk.lock();
    if (error && !error_) error_ = error;
    if (--running_ == 0) done_.notify_all();
  }
}

}  // namespace uccl
