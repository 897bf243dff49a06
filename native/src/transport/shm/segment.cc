#include "transport/shm/segment.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "common/errors.h"

namespace uccl {

ShmSegment& ShmSegment::operator=(ShmSegment&& o) noexcept {
  if (this != &o) {
    this->~ShmSegment();
    base_ = o.base_;
    size_ = o.size_;
    fd_ = o.fd_;
    o.base_ = nullptr;
    o.size_ = 0;
    o.fd_ = -1;
  }
  return *this;
}

ShmSegment::~ShmSegment() {
  if (base_) munmap(base_, size_);
  if (fd_ >= 0) close(fd_);
  base_ = nullptr;
  fd_ = -1;
}

static void* map_fd(int fd, size_t bytes, const std::string& what) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) raise(ErrorKind::Generic, "mmap of ", what, " failed: ", strerror(errno));
  return p;
}

ShmSegment ShmSegment::create(size_t bytes, const char* label) {
  ShmSegment s;
  s.fd_ = memfd_create(label, MFD_CLOEXEC);
  if (s.fd_ < 0) raise(ErrorKind::Generic, "memfd_create failed: ", strerror(errno));
  if (ftruncate(s.fd_, off_t(bytes)) != 0)
    raise(ErrorKind::Generic, "sizing shared segment to ", bytes, " bytes failed: ", strerror(errno));
  s.size_ = bytes;
  s.base_ = map_fd(s.fd_, bytes, "own shared segment");
  return s;
}

ShmSegment ShmSegment::attach(pid_t owner_pid, int owner_fd, size_t bytes) {
  std::string path = "/proc/" + std::to_string(owner_pid) + "/fd/" + std::to_string(owner_fd);
  ShmSegment s;
  s.fd_ = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (s.fd_ < 0)
    raise(ErrorKind::PeerFailure, "cannot open peer segment ", path, ": ", strerror(errno),
          " (peer gone, or ptrace access to same-host peers is restricted)");
  s.size_ = bytes;
  s.base_ = map_fd(s.fd_, bytes, path);
  return s;
}

}  // namespace uccl
