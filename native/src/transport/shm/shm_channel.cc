#include "transport/shm/shm_channel.h"

#include <poll.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>

#include "common/errors.h"

namespace uccl {

namespace {
constexpr uint32_t kRecWriteImm = 1;  // a=key b=offset c=len d=imm e=inline?
constexpr uint32_t kRecMessage = 2;   // a=tag b=total c=fragment offset

int open_pidfd(pid_t pid) {
#ifdef SYS_pidfd_open
  return int(syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  return -1;
#endif
}
}  // namespace

ShmChannel::ShmChannel(const ShmChannelParams& p, void* own_base, void* peer_base, const SegmentLayout& layout,
                       RegionTable* own_table)
    : p_(p),
      self_(p.peer_rank == p.my_rank),
      peer_hdr_(static_cast<SegmentHeader*>(peer_base)),
      peer_table_(static_cast<char*>(peer_base) + layout.table_offset(), layout.table_capacity, false,
                  format_msg("rank ", p.peer_rank, "'s region table (seen by rank ", p.my_rank, ")"), p.timeout_s),
      own_table_(own_table),
      out_(static_cast<char*>(peer_base) + layout.ring_offset(p.my_rank), layout.ring_bytes),
      in_(static_cast<char*>(own_base) + layout.ring_offset(p.peer_rank), layout.ring_bytes),
      peer_map_(static_cast<char*>(peer_base)),
      peer_arena_lo_(peer_hdr_->base_addr + peer_hdr_->arena_offset),
      peer_arena_hi_(peer_arena_lo_ + peer_hdr_->arena_bytes) {
  if (!self_) pidfd_ = open_pidfd(p.peer_pid);
}

char* ShmChannel::mapped(uint64_t peer_addr, uint64_t len) const {
  if (peer_addr < peer_arena_lo_ || peer_addr > peer_arena_hi_ || len > peer_arena_hi_ - peer_addr) return nullptr;
  return peer_map_ + (peer_addr - peer_hdr_->base_addr);
}

char* ShmChannel::map_remote(uint64_t rkey, uint64_t roff, uint64_t len) {
  Region r = check_remote(rkey, roff, len, kRemoteRead | kRemoteWrite, "map");
  if (self_) return reinterpret_cast<char*>(r.addr + roff);
  return mapped(r.addr + roff, len);
}

ShmChannel::~ShmChannel() {
  if (pidfd_ >= 0) close(pidfd_);
}

bool ShmChannel::peer_alive() {
  if (self_) return true;
  if (pidfd_ >= 0) {
    pollfd pfd{pidfd_, POLLIN, 0};
    return ::poll(&pfd, 1, 0) == 0;  // readable once the process has exited
  }
  return kill(p_.peer_pid, 0) == 0 || errno != ESRCH;
}

Region ShmChannel::check_remote(uint64_t rkey, uint64_t roff, uint64_t len, uint32_t need, const char* op) {
  auto r = peer_table_.lookup(rkey);
  if (!r)
    raise(ErrorKind::Access, "rank ", p_.my_rank, ": ", op, " to rank ", p_.peer_rank, ": remote key 0x", std::hex,
          rkey, std::dec, " is not registered there (never registered, or deregistered)");
  if ((r->flags & need) != need)
    raise(ErrorKind::Access, "rank ", p_.my_rank, ": ", op, " to rank ", p_.peer_rank, ": region 0x", std::hex,
          rkey, std::dec, " does not grant remote ", (need == kRemoteWrite ? "write" : "read"), " access");
  if (roff > r->len || len > r->len - roff)
    raise(ErrorKind::Access, "rank ", p_.my_rank, ": ", op, " to rank ", p_.peer_rank, ": ", len,
          " bytes at offset ", roff, " fall outside the remote region of ", r->len, " bytes");
  return *r;
}

void ShmChannel::copy_to_peer(const void* src, uint64_t dst_addr, uint64_t len) {
  if (self_) {
    std::memmove(reinterpret_cast<void*>(dst_addr), src, len);
    return;
  }
  if (char* dst = mapped(dst_addr, len)) {  // the peer's arena: mapped here too
    std::memcpy(dst, src, len);
    return;
  }
  uint64_t done = 0;
  while (done < len) {
    iovec local{const_cast<char*>(static_cast<const char*>(src)) + done, len - done};
    iovec remote{reinterpret_cast<void*>(dst_addr + done), len - done};
    ssize_t n = process_vm_writev(p_.peer_pid, &local, 1, &remote, 1, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ESRCH)
        raise(ErrorKind::PeerFailure, "rank ", p_.my_rank, ": write to rank ", p_.peer_rank, ": peer process ",
              p_.peer_pid, " has exited");
      raise(ErrorKind::Access, "rank ", p_.my_rank, ": write to rank ", p_.peer_rank,
            ": cross-memory copy failed: ", strerror(errno));
    }
    done += uint64_t(n);
  }
}

void ShmChannel::copy_from_peer(void* dst, uint64_t src_addr, uint64_t len) {
  if (self_) {
    std::memmove(dst, reinterpret_cast<void*>(src_addr), len);
    return;
  }
  if (const char* src = mapped(src_addr, len)) {
    std::memcpy(dst, src, len);
    return;
  }
  uint64_t done = 0;
  while (done < len) {
    iovec local{static_cast<char*>(dst) + done, len - done};
    iovec remote{reinterpret_cast<void*>(src_addr + done), len - done};
    ssize_t n = process_vm_readv(p_.peer_pid, &local, 1, &remote, 1, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      raise(errno == ESRCH ? ErrorKind::PeerFailure : ErrorKind::Access, "rank ", p_.my_rank, ": read from rank ",
            p_.peer_rank, ": cross-memory copy failed: ", strerror(errno));
    }
    done += uint64_t(n);
  }
}

RecordHeader* ShmChannel::reserve(size_t payload, const WaitFn& wait) {
  RecordHeader* rec = out_.reserve(payload);
  if (!rec) wait([&] { return (rec = out_.reserve(payload)) != nullptr; });
  return rec;
}

void ShmChannel::commit(RecordHeader* rec) {
  out_.commit(rec);
  peer_hdr_->bell.ring();
}

bool ShmChannel::write(uint64_t, const void* src, uint64_t len, uint64_t rkey, uint64_t roff, bool with_imm,
                       uint32_t imm, const WaitFn& wait) {
  Region r = check_remote(rkey, roff, len, kRemoteWrite, "write");
  bool inline_data = with_imm && len <= p_.inline_max;
  // The copy needs no lock: several threads (a collective's channels) copy at once;
  // only the ring record that announces a write is serialized.
  if (!inline_data) copy_to_peer(src, r.addr + roff, len);
  std::lock_guard<std::mutex> lock(send_mu_);
  if (with_imm) {
    RecordHeader* rec = reserve(inline_data ? len : 0, wait);
    *rec = RecordHeader{kRecWriteImm, uint32_t(inline_data ? len : 0), rkey, roff, len, imm, inline_data ? 1u : 0u};
    if (inline_data && len) std::memcpy(rec + 1, src, len);
    commit(rec);
  }
  counters_.writes++;
  counters_.bytes_written += len;
  return true;
}

bool ShmChannel::read(uint64_t, void* dst, uint64_t len, uint64_t rkey, uint64_t roff) {
  Region r = check_remote(rkey, roff, len, kRemoteRead, "read");
  copy_from_peer(dst, r.addr + roff, len);
  std::lock_guard<std::mutex> lock(send_mu_);
  counters_.reads++;
  counters_.bytes_read += len;
  return true;
}

bool ShmChannel::send(uint64_t, const void* data, uint64_t len, uint64_t tag, const WaitFn& wait) {
  std::lock_guard<std::mutex> lock(send_mu_);
  const char* p = static_cast<const char*>(data);
  uint64_t off = 0;
  do {  // a zero-length message is still one record
    uint64_t n = std::min<uint64_t>(len - off, out_.max_payload());
    RecordHeader* rec = reserve(n, wait);
    *rec = RecordHeader{kRecMessage, uint32_t(n), tag, len, off, 0, 0};
    if (n) std::memcpy(rec + 1, p + off, n);
    commit(rec);
    off += n;
  } while (off < len);
  counters_.msgs_sent++;
  counters_.bytes_sent += len;
  return true;
}

size_t ShmChannel::poll(ChannelSink& sink) {
  size_t events = 0;
  while (RecordHeader* rec = in_.peek()) {
    const void* payload = rec + 1;
    switch (rec->type) {
      case kRecWriteImm: {
        uint64_t key = rec->a, off = rec->b, len = rec->c;
        if (rec->e) {  // inline: validate against our own table before placing it
          auto r = own_table_->lookup(key);
          if (!r || !(r->flags & kRemoteWrite) || off > r->len || len > r->len - off || rec->payload != len) {
            sink.on_drop("inline write outside a registered region");
            break;
          }
          std::memcpy(reinterpret_cast<void*>(r->addr + off), payload, len);
        }
        counters_.remote_writes++;
        sink.on_remote_write(p_.peer_rank, key, off, len, uint32_t(rec->d));
        break;
      }
      case kRecMessage:
        if (rec->c + rec->payload == rec->b) {
          counters_.msgs_received++;
          counters_.bytes_received += rec->b;
        }
        sink.on_message(p_.peer_rank, rec->a, rec->b, rec->c, payload, rec->payload);
        break;
      default:
        sink.on_drop("unknown record type");
    }
    in_.pop(rec);
    ++events;
  }
  return events;
}

}  // namespace uccl
