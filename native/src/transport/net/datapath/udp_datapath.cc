#include "transport/net/datapath/udp_datapath.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/udp.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <cstdlib>

#include "common/errors.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

namespace uccl {

namespace {

constexpr uint32_t kAddrMagic = 0x55445031;  // "UDP1"
constexpr size_t kMaxGsoSegments = 64;       // kernel limit (UDP_MAX_SEGMENTS) on older kernels
constexpr size_t kMaxGsoBytes = kMaxMtu;     // one datagram: the IP limit, less headers
constexpr size_t kMaxMsgs = 64;              // messages per sendmmsg

std::string ip_str(uint32_t ipv4) {
  char buf[INET_ADDRSTRLEN] = {0};
  in_addr a{ipv4};
  inet_ntop(AF_INET, &a, buf, sizeof(buf));
  return buf;
}

void set_buffer(int fd, int opt_force, int opt, int bytes) {
  // Large buffers absorb bursts; FORCE works as root, the plain option is capped by rmem_max.
  if (setsockopt(fd, SOL_SOCKET, opt_force, &bytes, sizeof(bytes)) != 0)
    setsockopt(fd, SOL_SOCKET, opt, &bytes, sizeof(bytes));
}

// Appends this datapath's counters to `path` (UCCL_NET_DEBUG): packets per GSO/GRO
// train and system calls per packet are what the kernel's cost follows.
void dump_stats(const DatapathStats& s, const std::string& path) {
  FILE* f = path.empty() ? nullptr : fopen(path.c_str(), "a");
  if (!f) return;
  fprintf(f,
          "datapath: tx %llu pkts %llu msgs %llu calls %llu bytes %llu errors | rx %llu pkts %llu msgs %llu calls "
          "%llu bytes %llu polls\n",
          (unsigned long long)s.tx_packets, (unsigned long long)s.tx_msgs, (unsigned long long)s.tx_calls,
          (unsigned long long)s.tx_bytes, (unsigned long long)s.tx_errors, (unsigned long long)s.rx_packets,
          (unsigned long long)s.rx_msgs, (unsigned long long)s.rx_calls, (unsigned long long)s.rx_bytes,
          (unsigned long long)s.rx_polls);
  fclose(f);
}

}  // namespace

uint32_t choose_ipv4(const std::string& ifname, const std::string& addr) {
  if (!addr.empty()) {
    in_addr a{};
    if (inet_pton(AF_INET, addr.c_str(), &a) != 1)
      raise(ErrorKind::Argument, "UCCL_ADDR=", addr, " is not an IPv4 address");
    return a.s_addr;
  }
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) raise(ErrorKind::Generic, "net: getifaddrs failed: ", strerror(errno));
  uint32_t found = 0;
  bool have_if = false;
  for (ifaddrs* i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    uint32_t ip = reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr;
    if (!ifname.empty()) {
      if (ifname == i->ifa_name) {
        have_if = true;
        found = ip;
        break;
      }
      continue;
    }
    if ((i->ifa_flags & IFF_UP) && !(i->ifa_flags & IFF_LOOPBACK)) {
      found = ip;
      break;
    }
  }
  freeifaddrs(list);
  if (!ifname.empty() && !have_if)
    raise(ErrorKind::Argument, "UCCL_IFNAME=", ifname, ": no such interface with an IPv4 address");
  return found ? found : htonl(INADDR_LOOPBACK);
}

UdpDatapath::UdpDatapath(const UdpDatapathConfig& cfg) : mtu_(cfg.mtu), stats_file_(cfg.stats_file) {
  if (cfg.num_queues < 1 || cfg.num_queues > kMaxPaths)
    raise(ErrorKind::Argument, "UCCL_NUM_PATHS=", cfg.num_queues, ": must be in [1, ", kMaxPaths, "]");
  if (cfg.mtu < uint32_t(kMinMtu) || cfg.mtu > uint32_t(kMaxMtu))
    raise(ErrorKind::Argument, "UCCL_MTU=", cfg.mtu, ": must be in [", kMinMtu, ", ", kMaxMtu, "]");
  ipv4_ = choose_ipv4(cfg.ifname, cfg.addr);
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) raise(ErrorKind::Generic, "net: epoll_create1 failed: ", strerror(errno));
  for (int q = 0; q < cfg.num_queues; ++q) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) raise(ErrorKind::Generic, "net: socket failed: ", strerror(errno));
    fds_.push_back(fd);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = ipv4_;
    if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0)
      raise(ErrorKind::Argument, "net: cannot bind UDP socket to ", ip_str(ipv4_), ": ", strerror(errno),
            " (set UCCL_ADDR or UCCL_IFNAME)");
    socklen_t sl = sizeof(sa);
    getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &sl);
    ports_.push_back(sa.sin_port);
    set_buffer(fd, SO_SNDBUFFORCE, SO_SNDBUF, 8 << 20);
    set_buffer(fd, SO_RCVBUFFORCE, SO_RCVBUF, 16 << 20);
    int one = 1;
    if (q == 0) {
      // Probe offloads once; every socket then uses the same settings.
      int seg = int(mtu_);
      gso_ = setsockopt(fd, SOL_UDP, UDP_SEGMENT, &seg, sizeof(seg)) == 0;
      if (gso_) {
        seg = 0;  // per-message size comes in a cmsg; keep the socket default off
        setsockopt(fd, SOL_UDP, UDP_SEGMENT, &seg, sizeof(seg));
      }
      gro_ = setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof(one)) == 0;
    } else if (gro_) {
      setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof(one));
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = uint32_t(q);
    epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
  }
  ready_flag_.assign(fds_.size(), 0);
  rx_arena_.reset(new char[kRxSlots * kRxSlotBytes]);
}

UdpDatapath::~UdpDatapath() {
  dump_stats(stats_, stats_file_);
  for (int fd : fds_) close(fd);
  if (epfd_ >= 0) close(epfd_);
}

std::string encode_udp_address(uint32_t ipv4, const std::vector<uint16_t>& ports) {
  std::string out(10 + 2 * ports.size(), '\0');
  uint32_t magic = kAddrMagic;
  uint16_t n = uint16_t(ports.size());
  std::memcpy(&out[0], &magic, 4);
  std::memcpy(&out[4], &ipv4, 4);
  std::memcpy(&out[8], &n, 2);
  if (n) std::memcpy(&out[10], ports.data(), 2 * ports.size());
  return out;
}

std::string UdpDatapath::local_address() const { return encode_udp_address(ipv4_, ports_); }

bool decode_udp_address(const std::string& blob, PeerAddress* out) {
  if (blob.size() < 10) return false;
  uint32_t magic;
  uint16_t n;
  std::memcpy(&magic, &blob[0], 4);
  std::memcpy(&n, &blob[8], 2);
  if (magic != kAddrMagic || n == 0 || n > 256 || blob.size() < 10 + 2u * n) return false;
  std::memcpy(&out->ipv4, &blob[4], 4);
  std::memcpy(out->ports, &blob[10], 2u * n);
  out->num_queues = n;
  return true;
}

bool UdpDatapath::decode_address(const std::string& blob, PeerAddress* out) const {
  return decode_udp_address(blob, out);
}

size_t UdpDatapath::send(const TxPacket* pkts, size_t n) {
  size_t sent = 0, i = 0;
  while (i < n) {  // runs of packets on one queue go out in one sendmmsg
    size_t j = i + 1;
    while (j < n && pkts[j].queue == pkts[i].queue) ++j;
    sent += send_run(pkts[i].queue, pkts + i, j - i);
    i = j;
  }
  return sent;
}

size_t UdpDatapath::send_run(int queue, const TxPacket* pkts, size_t n) {
  int fd = fds_[size_t(queue)];
  mmsghdr msgs[kMaxMsgs];
  sockaddr_in dsts[kMaxMsgs];
  iovec iovs[kMaxMsgs * kMaxGsoSegments * 2 / 4];  // GSO trains use at most kMaxGsoBytes/256 segments
  constexpr size_t kIovCap = sizeof(iovs) / sizeof(iovs[0]);
  alignas(cmsghdr) char ctrl[kMaxMsgs][CMSG_SPACE(sizeof(uint16_t))];
  size_t sent_pkts = 0, i = 0;
  while (i < n) {
    size_t m = 0, iov_used = 0, first_pkt = i;
    std::memset(msgs, 0, sizeof(msgs));
    while (i < n && m < kMaxMsgs && iov_used + 2 <= kIovCap) {
      const TxPacket& p = pkts[i];
      const PeerAddress& peer = *p.peer;
      sockaddr_in& d = dsts[m];
      d = sockaddr_in{};
      d.sin_family = AF_INET;
      d.sin_addr.s_addr = peer.ipv4;
      d.sin_port = peer.ports[size_t(queue) % size_t(peer.num_queues)];
      const uint32_t seg = p.hdr_len + p.payload_len;
      size_t segs = 0, bytes = 0, iov_start = iov_used;
      // A GSO train: same destination, equal-sized segments, the last may be shorter.
      while (i < n && segs < (gso_ ? kMaxGsoSegments : 1) && iov_used + 2 <= kIovCap) {
        const TxPacket& q = pkts[i];
        uint32_t qs = q.hdr_len + q.payload_len;
        if (segs > 0 && (q.peer != p.peer || qs > seg || bytes + qs > kMaxGsoBytes)) break;
        iovs[iov_used++] = iovec{const_cast<void*>(q.hdr), q.hdr_len};
        if (q.payload_len) iovs[iov_used++] = iovec{const_cast<void*>(q.payload), q.payload_len};
        bytes += qs;
        ++segs;
        ++i;
        if (qs < seg) break;
      }
      msghdr& h = msgs[m].msg_hdr;
      h.msg_name = &d;
      h.msg_namelen = sizeof(d);
      h.msg_iov = &iovs[iov_start];
      h.msg_iovlen = iov_used - iov_start;
      if (segs > 1) {
        h.msg_control = ctrl[m];
        h.msg_controllen = CMSG_SPACE(sizeof(uint16_t));
        cmsghdr* c = CMSG_FIRSTHDR(&h);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t gs = uint16_t(seg);
        std::memcpy(CMSG_DATA(c), &gs, sizeof(gs));
      }
      ++stats_.tx_msgs;
      msgs[m].msg_len = uint32_t(segs);  // remember the segment count until sendmmsg overwrites it
      stats_.tx_bytes += bytes;
      ++m;
    }
    // Count segments per message before the kernel reuses msg_len.
    size_t segs_of[kMaxMsgs];
    for (size_t k = 0; k < m; ++k) segs_of[k] = msgs[k].msg_len;
    size_t k = 0;
    while (k < m) {
      int r = sendmmsg(fd, msgs + k, unsigned(m - k), 0);
      ++stats_.tx_calls;
      if (r > 0) {
        for (int x = 0; x < r; ++x) sent_pkts += segs_of[k + size_t(x)];
        k += size_t(r);
        continue;
      }
      if (errno == EINTR) continue;
      if (gso_ && (errno == EIO || errno == EINVAL) && segs_of[k] > 1) {
        // The device refused segmentation offload: fall back to plain datagrams for good.
        gso_ = false;
        size_t done = 0;
        for (size_t x = 0; x < k; ++x) done += segs_of[x];
        stats_.tx_packets += sent_pkts;
        return sent_pkts + send_run(queue, pkts + first_pkt + done, n - first_pkt - done);
      }
      ++stats_.tx_errors;  // EAGAIN/ENOBUFS/...: these packets count as lost
      ++k;
    }
  }
  stats_.tx_packets += sent_pkts;
  return sent_pkts;
}

void UdpDatapath::reply(int queue, uint32_t dst_ipv4, uint16_t dst_port, const void* data, uint32_t len) {
  sockaddr_in d{};
  d.sin_family = AF_INET;
  d.sin_addr.s_addr = dst_ipv4;
  d.sin_port = dst_port;
  ssize_t r;
  do {
    r = sendto(fds_[size_t(queue)], data, len, 0, reinterpret_cast<sockaddr*>(&d), sizeof(d));
  } while (r < 0 && errno == EINTR);
  ++stats_.tx_calls;
  if (r < 0) {
    ++stats_.tx_errors;
  } else {
    ++stats_.tx_packets;
    stats_.tx_bytes += len;
  }
}

void UdpDatapath::add_ready(int q) {
  if (!ready_flag_[size_t(q)]) {
    ready_flag_[size_t(q)] = 1;
    ready_.push_back(q);
  }
}

void UdpDatapath::wait(int extra_fd, int64_t timeout_ns) {
  if (extra_fd != extra_fd_ && extra_fd >= 0) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = 0xffffffffu;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, extra_fd, &ev);
    extra_fd_ = extra_fd;
  }
  epoll_event evs[64];
  timespec ts{}, *tsp = nullptr;
  if (timeout_ns >= 0) {
    ts.tv_sec = time_t(timeout_ns / 1000000000);
    ts.tv_nsec = long(timeout_ns % 1000000000);
    tsp = &ts;
  }
  int r = epoll_pwait2(epfd_, evs, 64, tsp, nullptr);
  ++stats_.rx_polls;
  for (int i = 0; i < r; ++i)
    if (evs[i].data.u32 != 0xffffffffu) add_ready(int(evs[i].data.u32));
}

size_t UdpDatapath::recv(RxPacket* out, size_t n) {
  // Refresh readiness when no queue is known ready, and every few calls anyway:
  // a queue drained earlier may have refilled and must not starve behind busy
  // ones. (An epoll call per recv was a quarter of the receiver's syscalls.)
  if (ready_.empty() || ++calls_since_poll_ >= kPollEvery) {
    calls_since_poll_ = 0;
    wait(-1, 0);
  }
  size_t got = 0, slot = 0;
  mmsghdr msgs[kRxSlots];
  iovec iovs[kRxSlots];
  sockaddr_in srcs[kRxSlots];
  alignas(cmsghdr) char ctrl[kRxSlots][CMSG_SPACE(sizeof(int))];
  const size_t per_slot = gro_ ? kRxSlotBytes / mtu_ + 1 : 1;  // packets one slot can split into
  while (!ready_.empty() && slot < kRxSlots && got + per_slot <= n) {
    if (ready_pos_ >= ready_.size()) ready_pos_ = 0;
    int q = ready_[ready_pos_];
    // Without GRO a slot holds one datagram, so ask for no more than `n` can split into.
    // A few slots per queue per turn: a batch interleaves the paths instead of
    // draining one, which would make the others' packets look reordered.
    size_t want = std::min<size_t>((n - got) / per_slot, 2);
    want = std::max<size_t>(1, std::min(want, kRxSlots - slot));
    for (size_t k = 0; k < want; ++k) {
      iovs[k] = iovec{rx_arena_.get() + (slot + k) * kRxSlotBytes, kRxSlotBytes};
      msghdr& h = msgs[k].msg_hdr;
      h = msghdr{};
      h.msg_name = &srcs[k];
      h.msg_namelen = sizeof(srcs[k]);
      h.msg_iov = &iovs[k];
      h.msg_iovlen = 1;
      h.msg_control = ctrl[k];
      h.msg_controllen = sizeof(ctrl[k]);
    }
    int r = recvmmsg(fds_[size_t(q)], msgs, unsigned(want), MSG_DONTWAIT, nullptr);
    ++stats_.rx_calls;
    if (r <= 0) {
      if (r < 0 && errno == EINTR) continue;
      ready_flag_[size_t(q)] = 0;  // drained
      ready_.erase(ready_.begin() + long(ready_pos_));
      continue;
    }
    for (int k = 0; k < r; ++k) {
      uint32_t len = msgs[k].msg_len;
      uint32_t seg = len;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msgs[k].msg_hdr); c; c = CMSG_NXTHDR(&msgs[k].msg_hdr, c))
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
          int gs;
          std::memcpy(&gs, CMSG_DATA(c), sizeof(gs));
          if (gs > 0) seg = uint32_t(gs);
        }
      const char* base = static_cast<const char*>(iovs[k].iov_base);
      stats_.rx_bytes += len;
      ++stats_.rx_msgs;
      if (len == 0 && got < n) {  // an empty datagram is passed on too: the engine counts it (as malformed)
        out[got++] = RxPacket{q, base, 0, srcs[k].sin_addr.s_addr, srcs[k].sin_port};
        ++stats_.rx_packets;
      }
      for (uint32_t off = 0; off < len && got < n; off += seg) {
        out[got++] = RxPacket{q, base + off, std::min(seg, len - off), srcs[k].sin_addr.s_addr, srcs[k].sin_port};
        ++stats_.rx_packets;
      }
    }
    slot += size_t(r);
    if (size_t(r) < want) {  // fewer than asked: this queue is drained
      ready_flag_[size_t(q)] = 0;
      ready_.erase(ready_.begin() + long(ready_pos_));
    } else {
      ++ready_pos_;  // round robin so one busy path cannot starve the others
    }
  }
  return got;
}

}  // namespace uccl
