// Anonymous shared memory (memfd) that peers on the same host map through
// /proc/<pid>/fd/<fd>. No name ever exists in /dev/shm, so a crash leaves nothing behind.
#pragma once
#include <sys/types.h>

#include <cstddef>

namespace uccl {

class ShmSegment {
 public:
  ShmSegment() = default;
  ShmSegment(const ShmSegment&) = delete;
  ShmSegment& operator=(const ShmSegment&) = delete;
  ShmSegment(ShmSegment&& o) noexcept { *this = static_cast<ShmSegment&&>(o); }
  ShmSegment& operator=(ShmSegment&& o) noexcept;
  ~ShmSegment();

  // Creates a zero-filled segment owned by this process.
  static ShmSegment create(size_t bytes, const char* label);
  // Maps a segment another process on this host created.
  static ShmSegment attach(pid_t owner_pid, int owner_fd, size_t bytes);

  void* data() const { return base_; }
  size_t size() const { return size_; }
  int fd() const { return fd_; }

 private:
  void* base_ = nullptr;
  size_t size_ = 0;
  int fd_ = -1;
};

}  // namespace uccl
