#include "transport/endpoint.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iomanip>

#include "common/clock.h"
#include "common/errors.h"
#include "transport/descriptor.h"
#include "transport/shm/shm_channel.h"

namespace uccl {

namespace {

constexpr double kAutoYieldUs = 1000.0;  // yield before sleeping when every peer is on shm

// `declared`: the host a declared topology puts this rank on (UCCL_TOPOLOGY); ranks on
// different declared hosts talk over the net channel even where shm could reach them.
std::string host_identity(const std::string& declared) {
  std::string boot;
  std::ifstream("/proc/sys/kernel/random/boot_id") >> boot;
  auto link = [](const char* path) {
    char ns[64] = {0};
    ssize_t n = readlink(path, ns, sizeof(ns) - 1);
    return std::string(ns, n > 0 ? size_t(n) : 0);
  };
  // Ranks in different network namespaces are different hosts (an emulated fabric):
  // they talk over the net channel even though shm could reach them.
  return boot + "/" + link("/proc/self/ns/pid") + "/" + link("/proc/self/ns/net") + "/" + declared;
}

}  // namespace

Endpoint::Endpoint(const EndpointConfig& cfg) : cfg_(cfg) {
  if (cfg_.world < 1 || cfg_.rank < 0 || cfg_.rank >= cfg_.world)
    raise(ErrorKind::Argument, "invalid rank ", cfg_.rank, " for world size ", cfg_.world);
  if (cfg_.ring_bytes < kMinRingBytes || (cfg_.ring_bytes & (cfg_.ring_bytes - 1)))
    raise(ErrorKind::Argument, "UCCL_SHM_RING_BYTES=", cfg_.ring_bytes, ": must be a power of two >= ", kMinRingBytes);
  if (cfg_.inline_max > cfg_.ring_bytes / 8) cfg_.inline_max = cfg_.ring_bytes / 8;
  layout_ = SegmentLayout{cfg_.world, cfg_.max_regions, cfg_.ring_bytes, cfg_.arena_bytes};
  own_ = ShmSegment::create(layout_.total(), "uccl-endpoint");
  hdr_ = new (own_.data()) SegmentHeader{};
  hdr_->magic = kSegmentMagic;
  hdr_->secret = cfg_.secret;
  hdr_->rank = cfg_.rank;
  hdr_->world = cfg_.world;
  hdr_->pid = int32_t(getpid());
  hdr_->table_capacity = cfg_.max_regions;
  hdr_->ring_bytes = cfg_.ring_bytes;
  hdr_->base_addr = uint64_t(own_.data());
  hdr_->arena_offset = layout_.arena_offset();
  hdr_->arena_bytes = layout_.total() - layout_.arena_offset();
  arena_.init(static_cast<char*>(own_.data()) + hdr_->arena_offset, hdr_->arena_bytes);
  table_ = std::make_unique<RegionTable>(static_cast<char*>(own_.data()) + layout_.table_offset(), cfg_.max_regions,
                                         true, format_msg("rank ", cfg_.rank, "'s region table"), cfg_.timeout_s);
  assembly_.resize(size_t(cfg_.world));
  if (cfg_.transport != "shm") net_ = NetTransport::create(cfg_.rank, cfg_.secret, cfg_.net, &hdr_->bell, table_.get());
}

Endpoint::~Endpoint() {
  hdr_->closed.store(1, std::memory_order_release);
  channels_.clear();
  peer_segments_.clear();
}

std::string Endpoint::descriptor() const {
  Descriptor d{};
  d.magic = kDescriptorMagic;
  d.secret = cfg_.secret;
  d.rank = cfg_.rank;
  d.world = cfg_.world;
  d.pid = int32_t(getpid());
  d.fd = own_.fd();
  d.segment_bytes = own_.size();
  std::string host = host_identity(cfg_.host_tag);
  std::strncpy(d.host, host.c_str(), sizeof(d.host) - 1);
  return encode_descriptor(d, net_ ? net_->local_address() : std::string());  // the net address: an opaque tail
}

void Endpoint::connect(const std::vector<std::string>& descriptors) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  if (connected_) raise(ErrorKind::Argument, "rank ", cfg_.rank, ": endpoint is already connected");
  if (int(descriptors.size()) != cfg_.world)
    raise(ErrorKind::Argument, "rank ", cfg_.rank, ": connect got ", descriptors.size(), " descriptors for world ",
          cfg_.world);
  std::string my_host = host_identity(cfg_.host_tag);
  peer_segments_.resize(size_t(cfg_.world));
  for (int p = 0; p < cfg_.world; ++p) {
    PeerDescriptor peer;
    const DescriptorCheck check = decode_descriptor(descriptors[size_t(p)], p, cfg_.world, cfg_.secret, &peer);
    if (check == DescriptorCheck::kMalformed)
      raise(ErrorKind::PeerFailure, "rank ", cfg_.rank, ": connect: descriptor from rank ", p, " is malformed");
    if (check == DescriptorCheck::kForeign)
      raise(ErrorKind::PeerFailure, "rank ", cfg_.rank, ": connect: descriptor from rank ", p,
            " belongs to another job or world");
    const Descriptor& d = peer.d;
    bool same_host = my_host == peer.host;
    ShmChannelParams params{cfg_.rank, p, pid_t(d.pid), cfg_.inline_max, cfg_.timeout_s};
    if (p == cfg_.rank) {
      channels_.push_back(std::make_unique<ShmChannel>(params, own_.data(), own_.data(), layout_, table_.get()));
      continue;
    }
    if (cfg_.transport == "net" || !same_host) {
      const std::string& peer_net = peer.net_tail;
      if (!net_ || peer_net.empty())
        raise(ErrorKind::Argument, "rank ", cfg_.rank, ": connect to rank ", p,
              ": no net channel (UCCL_TRANSPORT=shm here or at the peer, but the peer ",
              same_host ? "must use the net channel)" : "is on another host)");
      channels_.push_back(net_->connect(p, peer_net));
      continue;
    }
    peer_segments_[size_t(p)] = ShmSegment::attach(pid_t(d.pid), d.fd, d.segment_bytes);
    auto* peer_hdr = static_cast<SegmentHeader*>(peer_segments_[size_t(p)].data());
    if (peer_hdr->magic != kSegmentMagic || peer_hdr->secret != cfg_.secret || peer_hdr->rank != p)
      raise(ErrorKind::PeerFailure, "rank ", cfg_.rank, ": connect: shared segment of rank ", p,
            " failed verification");
    channels_.push_back(
        std::make_unique<ShmChannel>(params, own_.data(), peer_segments_[size_t(p)].data(), layout_, table_.get()));
  }
  bool any_net = false;
  for (const auto& ch : channels_) any_net |= std::string(ch->kind()) == "net";
  // A rank waiting on the net needs the kernel's packet path (softirqs, forwarding)
  // to run, and a yielding thread stays runnable and takes its share of the cores;
  // between shm peers the wake-up that yielding saves pays.
  yield_us_ = cfg_.yield_us >= 0 ? cfg_.yield_us : any_net ? 0.0 : kAutoYieldUs;
  connected_ = true;
}

std::string Endpoint::channel_kind(int peer) const {
  check_peer(peer, "channel_kind");
  return channels_[size_t(peer)]->kind();
}

uint64_t Endpoint::refused_by_us(int peer) const {
  check_peer(peer, "refused_by_us");
  return channels_[size_t(peer)]->refused();
}

void Endpoint::check_peer(int peer, const char* op) const {
  if (!connected_) raise(ErrorKind::Argument, "rank ", cfg_.rank, ": ", op, ": endpoint is not connected");
  if (peer < 0 || peer >= cfg_.world)
    raise(ErrorKind::Argument, "rank ", cfg_.rank, ": ", op, ": peer rank ", peer, " is outside world of size ",
          cfg_.world);
}

uint64_t Endpoint::register_region(uint64_t addr, uint64_t len, uint32_t flags) {
  if (flags & ~uint32_t(kRemoteWrite | kRemoteRead))
    raise(ErrorKind::Argument, "rank ", cfg_.rank, ": register: unknown access flags 0x", std::hex, flags);
  return table_->add(addr, len, flags);
}

void Endpoint::deregister_region(uint64_t key) {
  if (!table_->remove(key))
    raise(ErrorKind::Argument, "rank ", cfg_.rank, ": deregister: key 0x", std::hex, key, " is not registered");
}

Region Endpoint::local_region(uint64_t key, uint64_t off, uint64_t len, const char* op) const {
  auto r = table_->lookup(key);
  if (!r)
    raise(ErrorKind::Access, "rank ", cfg_.rank, ": ", op, ": local key 0x", std::hex, key, std::dec,
          " is not registered (never registered, or deregistered)");
  if (off > r->len || len > r->len - off)
    raise(ErrorKind::Access, "rank ", cfg_.rank, ": ", op, ": ", len, " bytes at local offset ", off,
          " fall outside the local region of ", r->len, " bytes");
  return *r;
}

WaitFn Endpoint::waiter(const OpDesc& op) {
  return [this, op](const std::function<bool()>& ready) { wait_until(ready, cfg_.timeout_s, op); };
}

Endpoint::Posted Endpoint::start(const OpDesc& op, const std::function<bool(uint64_t)>& post, Hold hold) {
  uint64_t id = next_wr_id();
  if (post(id)) return Posted{id, true};  // synchronous: nothing to remember
  std::lock_guard<std::recursive_mutex> lock(mu_);
  if (!done_.count(id)) pending_[id] = Pending{op, std::move(hold)};  // else it completed meanwhile
  return Posted{id, false};
}

void Endpoint::settle(Completion c) {
  auto p = pending_.find(c.wr_id);
  bool detached = false;
  if (p != pending_.end()) {
    detached = p->second.detached;
    pending_.erase(p);  // releases the caller's memory
  }
  if (!detached) {
    done_[c.wr_id] = std::move(c);
  } else if (!c.ok) {
    detached_failures_.push_back(std::move(c));
  }
}

void Endpoint::detach(uint64_t wr_id) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  auto p = pending_.find(wr_id);
  if (p != pending_.end()) {
    p->second.detached = true;
    return;
  }
  auto d = done_.find(wr_id);
  if (d == done_.end()) return;
  if (!d->second.ok) detached_failures_.push_back(std::move(d->second));
  done_.erase(d);
}

void Endpoint::raise_detached_failure(const OpDesc& op) {
  for (auto it = detached_failures_.begin(); it != detached_failures_.end(); ++it) {
    if (!(op.any_peer || op.peer == kAnySource || op.peer == it->peer)) continue;
    Completion c = std::move(*it);
    detached_failures_.erase(it);
    raise(c.error_kind, c.error, " (an operation nobody waited for; reported by ", op.str(), ")");
  }
}

Endpoint::Posted Endpoint::write(int peer, uint64_t lkey, uint64_t loff, uint64_t len, uint64_t rkey,
                                 uint64_t roff, bool with_imm, uint32_t imm, Hold hold) {
  check_peer(peer, "write");
  Region local = local_region(lkey, loff, len, "write");
  OpDesc op{Opcode::Write, peer, 0, nullptr};
  return start(op, [&](uint64_t id) {
    return channels_[size_t(peer)]->write(id, reinterpret_cast<const void*>(local.addr + loff), len, rkey, roff,
                                          with_imm, imm, waiter(op));
  }, std::move(hold));
}

Endpoint::Posted Endpoint::read(int peer, uint64_t lkey, uint64_t loff, uint64_t len, uint64_t rkey,
                                uint64_t roff, Hold hold) {
  check_peer(peer, "read");
  Region local = local_region(lkey, loff, len, "read");
  return start(OpDesc{Opcode::Read, peer, 0, nullptr}, [&](uint64_t id) {
    return channels_[size_t(peer)]->read(id, reinterpret_cast<void*>(local.addr + loff), len, rkey, roff);
  }, std::move(hold));
}

char* Endpoint::map_remote(int peer, uint64_t rkey, uint64_t roff, uint64_t len) {
  check_peer(peer, "map");
  return channels_[size_t(peer)]->map_remote(rkey, roff, len);
}

void Endpoint::wake(int peer) {
  check_peer(peer, "wake");
  channels_[size_t(peer)]->wake();
}

Endpoint::Posted Endpoint::send(int peer, const void* data, uint64_t len, uint64_t tag, Hold hold) {
  check_peer(peer, "send");
  OpDesc op{Opcode::Send, peer, tag, nullptr};
  return start(
      op, [&](uint64_t id) { return channels_[size_t(peer)]->send(id, data, len, tag, waiter(op)); },
      std::move(hold));
}

void Endpoint::on_local_complete(Completion c) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  settle(std::move(c));
}

uint64_t Endpoint::post_recv(int src, void* buf, uint64_t cap, uint64_t tag, Hold hold) {
  if (src != kAnySource) check_peer(src, "recv");
  uint64_t id = next_wr_id();
  PostedRecv r{id, src, tag, static_cast<char*>(buf), cap};
  std::lock_guard<std::recursive_mutex> lock(mu_);
  progress_locked();
  pending_[id] = Pending{OpDesc{Opcode::Recv, src, tag, nullptr}, std::move(hold)};
  // An already complete unexpected message matches first (arrival order).
  for (auto it = unexpected_.begin(); it != unexpected_.end(); ++it) {
    if ((src == kAnySource || it->src == src) && it->tag == tag && it->complete()) {
      if (it->data.size() <= cap && !it->data.empty()) std::memcpy(buf, it->data.data(), it->data.size());
      complete_recv(r, it->src, it->tag, it->data.size());
      unexpected_.erase(it);
      return id;
    }
  }
  posted_.push_back(r);
  return id;
}

void Endpoint::complete_recv(const PostedRecv& r, int src, uint64_t tag, uint64_t total) {
  Completion c;
  c.wr_id = r.wr_id;
  c.opcode = Opcode::Recv;
  c.peer = src;
  c.tag = tag;
  c.len = total;
  if (total > r.cap) {
    c.ok = false;
    c.error_kind = ErrorKind::Mismatch;
    c.error = format_msg("rank ", cfg_.rank, ": recv(tag=", tag, ") from rank ", src, ": message of ", total,
                         " bytes does not fit the ", r.cap, "-byte buffer");
  }
  settle(std::move(c));
}

void Endpoint::on_remote_write(int src, uint64_t key, uint64_t offset, uint64_t len, uint32_t imm) {
  Completion c;
  c.opcode = Opcode::RemoteWrite;
  c.peer = src;
  c.key = key;
  c.offset = offset;
  c.len = len;
  c.imm = imm;
  remote_writes_.push_back(c);
}

void Endpoint::on_message(int src, uint64_t tag, uint64_t total, uint64_t frag_off, const void* data, size_t len) {
  Assembly& a = assembly_[size_t(src)];
  if (frag_off == 0) {
    a = Assembly{};
    a.active = true;
    auto match = std::find_if(posted_.begin(), posted_.end(), [&](const PostedRecv& r) {
      return (r.src == kAnySource || r.src == src) && r.tag == tag;
    });
    if (match != posted_.end()) {
      a.to_posted = true;
      a.posted = *match;
      posted_.erase(match);
    } else {
      unexpected_.push_back(Unexpected{src, tag, std::vector<char>(total)});
      a.unexpected = std::prev(unexpected_.end());
    }
  } else if (!a.active || frag_off != a.received) {
    on_drop("message fragment out of sequence");
    return;
  }
  if (a.to_posted) {
    if (total <= a.posted.cap && len) std::memcpy(a.posted.buf + frag_off, data, len);
  } else {
    if (len) std::memcpy(a.unexpected->data.data() + frag_off, data, len);
    a.unexpected->received += len;
  }
  a.received += len;
  if (a.received < total) return;
  a.active = false;
  if (a.to_posted) {
    complete_recv(a.posted, src, tag, total);
    return;
  }
  // A receive posted while this message was still arriving takes it now.
  auto match = std::find_if(posted_.begin(), posted_.end(), [&](const PostedRecv& r) {
    return (r.src == kAnySource || r.src == src) && r.tag == tag;
  });
  if (match != posted_.end()) {
    if (total <= match->cap && total) std::memcpy(match->buf, a.unexpected->data.data(), total);
    complete_recv(*match, src, tag, total);
    posted_.erase(match);
    unexpected_.erase(a.unexpected);
  }
}

void Endpoint::on_drop(const char* reason) { drops_[reason]++; }

void Endpoint::progress_locked() {
  for (auto& ch : channels_) ch->poll(*this);
}

void Endpoint::progress() {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  progress_locked();
}

std::vector<int> Endpoint::dead_peers() {
  std::vector<int> dead;
  for (int p = 0; p < cfg_.world; ++p)
    if (p != cfg_.rank && !channels_[size_t(p)]->peer_alive() && !channels_[size_t(p)]->peer_closed())
      dead.push_back(p);
  return dead;
}

void Endpoint::raise_wait_failure(const OpDesc& op, double timeout_s) {
  int peer = op.peer;
  if (peer == kAnySource || op.any_peer) {
    std::string dead;
    int n = 0;
    for (int p = 0; p < cfg_.world; ++p)
      if (!channels_[size_t(p)]->peer_alive() && (p == op.peer || !channels_[size_t(p)]->peer_closed()))
        dead += (n++ ? ", " : "") + std::to_string(p);
    if (n)
      raise(ErrorKind::PeerFailure, "rank ", cfg_.rank, ": ", op.str(), ": rank", n > 1 ? "s " : " ", dead,
            n > 1 ? " have" : " has", " died");
  } else if (peer >= 0 && !channels_[size_t(peer)]->peer_alive()) {
    raise(ErrorKind::PeerFailure, "rank ", cfg_.rank, ": ", op.str(), ": rank ", peer, " has died");
  }
  std::ostringstream t;
  t << std::fixed << std::setprecision(3) << timeout_s;
  raise(ErrorKind::Timeout, "rank ", cfg_.rank, ": ", op.str(), " timed out after ", t.str(), " s");
}

void Endpoint::wait_until(const std::function<bool()>& ready, double timeout_s, const OpDesc& op) {
  if (!connected_) raise(ErrorKind::Argument, "rank ", cfg_.rank, ": ", op.str(), ": endpoint is not connected");
  auto check = [&] {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    progress_locked();
    if (!detached_failures_.empty()) raise_detached_failure(op);
    return ready();
  };
  if (check()) return;
  Deadline deadline(timeout_s);
  const uint64_t spin_end = now_ns() + uint64_t(cfg_.spin_us * 1000);
  // Spin briefly: most waits inside a collective end within microseconds.
  while (now_ns() < spin_end) {
    if (check()) return;
    for (int i = 0; i < 16; ++i) cpu_relax();
  }
  // Then stay runnable but give the core away: with more ranks than cores the peer
  // we wait for needs it, and a futex wake-up costs a scheduler round trip.
  const uint64_t yield_end = now_ns() + uint64_t(yield_us_ * 1000);
  while (now_ns() < yield_end) {
    if (check()) return;
    sched_yield();
  }
  uint64_t next_liveness = 0;
  for (;;) {
    uint32_t armed = hdr_->bell.arm();
    bool ready_now;
    try {
      ready_now = check();
    } catch (...) {  // a detached operation's failure: peers must not keep ringing for us
      hdr_->bell.disarm();
      throw;
    }
    if (ready_now) {
      hdr_->bell.disarm();
      return;
    }
    uint64_t now = now_ns();
    bool dead = false;
    if (now >= next_liveness) {  // a dead peer fails the wait long before the timeout
      next_liveness = now + 5'000'000;
      if (op.peer == kAnySource || op.any_peer) {
        // A peer that closed its endpoint finished its part: only the one waited for counts.
        for (int p = 0; p < cfg_.world; ++p) {
          Channel& ch = *channels_[size_t(p)];
          dead |= !ch.peer_alive() && (p == op.peer || !ch.peer_closed());
        }
      } else if (op.peer >= 0) {
        dead = !channels_[size_t(op.peer)]->peer_alive();
      }
    }
    if (dead || deadline.expired()) {
      hdr_->bell.disarm();
      if (check()) return;
      raise_wait_failure(op, timeout_s);
    }
    hdr_->bell.sleep(armed, std::min<uint64_t>(deadline.remaining_ns(), 2'000'000));
    hdr_->bell.disarm();
  }
}

Completion Endpoint::wait(uint64_t wr_id, double timeout_s) {
  OpDesc op;
  {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    auto p = pending_.find(wr_id);
    if (p != pending_.end()) {
      op = p->second.op;
    } else if (!done_.count(wr_id)) {
      raise(ErrorKind::Argument, "rank ", cfg_.rank, ": wait: unknown or already completed request ", wr_id);
    }
  }
  wait_until([&] { return done_.count(wr_id) != 0; }, timeout_s, op);
  std::lock_guard<std::recursive_mutex> lock(mu_);
  Completion c = std::move(done_[wr_id]);
  done_.erase(wr_id);
  if (!c.ok) throw Error(c.error_kind, c.error);
  return c;
}

bool Endpoint::test(uint64_t wr_id) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  progress_locked();
  return done_.count(wr_id) != 0;
}

Completion Endpoint::wait_remote_write(int src, double timeout_s) {
  if (src != kAnySource) check_peer(src, "wait_remote_write");
  std::deque<Completion>::iterator found;
  auto ready = [&] {
    found = std::find_if(remote_writes_.begin(), remote_writes_.end(),
                         [&](const Completion& c) { return src == kAnySource || c.peer == src; });
    return found != remote_writes_.end();
  };
  wait_until(ready, timeout_s, OpDesc{Opcode::RemoteWrite, src, 0, nullptr});
  std::lock_guard<std::recursive_mutex> lock(mu_);
  ready();
  Completion c = *found;
  remote_writes_.erase(found);
  return c;
}

std::vector<Completion> Endpoint::poll_remote_writes(size_t max) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  progress_locked();
  std::vector<Completion> out;
  while (!remote_writes_.empty() && out.size() < max) {
    out.push_back(remote_writes_.front());
    remote_writes_.pop_front();
  }
  return out;
}

void Endpoint::drain_remote_writes(const std::function<void(const Completion&)>& fn) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  while (!remote_writes_.empty()) {
    Completion c = remote_writes_.front();
    remote_writes_.pop_front();
    fn(c);
  }
}

Endpoint::Stats Endpoint::stats() {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  Stats s;
  for (auto& ch : channels_) s.peers.push_back(ch->counters());
  s.drops = drops_;
  s.completions_held = done_.size();
  s.operations_in_flight = pending_.size();
  return s;
}

}  // namespace uccl
