// Helper threads that let one rank drive several channels of a large collective
// at once, each on a disjoint part of the data (as NCCL runs several channels per
// GPU): a single core cannot saturate memory bandwidth on larger machines. Helpers
// sleep between calls, so an idle pool costs nothing on a small one.
#pragma once
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace uccl {

class WorkerPool {
 public:
  WorkerPool() = default;
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Runs fn(0) on the calling thread and fn(1) .. fn(n - 1) on helpers; returns when
  // all have finished, rethrowing the first error.
  void run(int n, const std::function<void(int)>& fn);

 private:
  void helper_loop(int index);

  std::mutex mu_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> threads_;
  const std::function<void(int)>* job_ = nullptr;
  int job_width_ = 0;
  unsigned long generation_ = 0;
  int running_ = 0;
  bool stopping_ = false;
  std::exception_ptr error_;
};

}  // namespace uccl
