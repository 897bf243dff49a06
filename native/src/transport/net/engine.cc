#include "transport/net/engine.h"

#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/clock.h"
#include "common/errors.h"
#include "common/stream_copy.h"

namespace uccl::net {

namespace {
// Packets per receive batch; one ack per flow follows each batch, so this also
// bounds how much a hole in one socket's queue can look like loss.
constexpr size_t kRxBatch = 256;
// Keep polling at most this long after the last activity. The window adapts: it halves
// each time an idle gap outlasted kSpinNs (a paced or rate-limited wire: the spin would
// only have burnt the core the application computes on) and doubles when a gap was
// shorter (spinning would have caught the next packet without an epoll wakeup).
constexpr uint64_t kSpinNs = 20'000;
constexpr uint64_t kMinSpinNs = 500;
// Retransmission timers wait until the receive queues are drained (or this many
// batches in a row were not): after the engine was descheduled, the acks that
// answer its oldest packets are usually sitting unread in the sockets, and an
// RTO judged before reading them would be spurious.
constexpr int kMaxTimerDeferrals = 8;
// At close, how long posted operations may take to be acknowledged before the flows
// stop sending anyway (a peer that died or closed first never acknowledges).
constexpr uint64_t kDrainNs = 2'000'000'000;
}  // namespace

Engine::Engine(std::unique_ptr<Datapath> dp, int rank, uint32_t nonce, Doorbell* bell, double linger_s)
    : dp_(std::move(dp)), rank_(rank), nonce_(nonce), bell_(bell), linger_ns_(uint64_t(linger_s * 1e9)) {
  evfd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (evfd_ < 0) raise(ErrorKind::Generic, "net: eventfd failed: ", strerror(errno));
}

Engine::~Engine() {
  if (thread_.joinable()) {
    stop_.store(true);
    kick();
    thread_.join();
  }
  close(evfd_);
}

void Engine::add_flow(std::shared_ptr<Flow> flow) {
  {
    std::lock_guard<std::mutex> lock(new_mu_);
    new_flows_.push_back(std::move(flow));
    have_new_.store(true);
    if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
  }
  kick();
}

void Engine::kick() {
  kicked_.store(true, std::memory_order_seq_cst);
  if (sleeping_.load(std::memory_order_seq_cst)) {
    uint64_t one = 1;
    ssize_t r = write(evfd_, &one, sizeof(one));
    (void)r;
  }
}

void Engine::adopt_new_flows() {
  std::lock_guard<std::mutex> lock(new_mu_);
  for (auto& f : new_flows_) {
    by_rank_[f->params().peer_rank] = f.get();
    flows_.push_back(std::move(f));
  }
  new_flows_.clear();
  have_new_.store(false);
}

void Engine::dispatch(const RxPacket& p, uint64_t now) {
  CommonHeader c;
  if (p.len < sizeof(c)) {
    drops_.add(kDropMalformed);
    return;
  }
  std::memcpy(&c, p.data, sizeof(c));
  if (c.magic != kMagic) {
    drops_.add(kDropMalformed);
    return;
  }
  if (c.version != kVersion) {
    drops_.add(kDropBadVersion);
    return;
  }
  if (c.dst_rank != uint16_t(rank_) || c.dst_nonce != nonce_) {
    drops_.add(kDropMisdirected);
    return;
  }
  Flow* f = last_flow_;  // a batch mostly comes from one peer: skip the map
  if (!f || f->params().peer_rank != int(c.src_rank)) {
    auto it = by_rank_.find(int(c.src_rank));
    if (it == by_rank_.end()) {
      drops_.add(kDropUnknownConn);
      return;
    }
    f = last_flow_ = it->second;
  }
  if (c.src_nonce != f->params().peer_nonce) {
    drops_.add(kDropStalePeer);
    return;
  }
  if (c.auth != f->rx_auth()) {  // the tag for this connection id, computed once per flow
    drops_.add(kDropBadAuth);
    return;
  }
  DataHeader h;
  uint32_t payload_len = 0;
  AckHeader a;
  switch (decode_packet(p.data, p.len, &h, &payload_len, &a)) {
    case Parsed::kData: f->on_data(h, p.data + sizeof(DataWire), payload_len, p, now); return;
    case Parsed::kAck: {
      // A receiver never forgets what arrived, so an ack sent before one already
      // taken says nothing new: a late replay, or one overtaken on another path.
      uint64_t& newest = newest_ack_ns_[f];
      if (a.sent_ns < newest) {
        f->drops().add(kDropStaleAck);
        return;
      }
      newest = a.sent_ns;
      f->on_ack(a, now);
      return;
    }
    case Parsed::kMalformed: drops_.add(kDropMalformed); return;
  }
}

void Engine::send_ack(Flow* f, uint64_t now) {
  AckHeader a;
  int q;
  uint32_t ip;
  uint16_t port;
  if (f->take_ack(&a, &q, &ip, &port, now)) dp_->reply(q, ip, port, &a, ack_length(a));
}

void Engine::sleep_until(uint64_t deadline_ns, uint64_t now) {
  sleeping_.store(true, std::memory_order_seq_cst);
  if (!kicked_.load(std::memory_order_seq_cst)) {
    int64_t timeout = deadline_ns == ~0ull ? -1 : int64_t(deadline_ns > now ? deadline_ns - now : 0);
    dp_->wait(evfd_, timeout);
  }
  sleeping_.store(false, std::memory_order_seq_cst);
  uint64_t v;
  ssize_t r = read(evfd_, &v, sizeof(v));  // drain (non-blocking)
  (void)r;
}

void Engine::run() {
  pthread_setname_np(pthread_self(), "uccl-engine");  // visible in top/perf
  std::vector<RxPacket> rx(kRxBatch);
  auto batch = std::make_unique<TxBatch>();
  uint64_t last_activity = now_ns();
  uint64_t stop_since = 0, closing_since = 0, last_rx = now_ns();
  int timer_deferrals = 0;
  uint64_t spin_ns = kSpinNs;
  for (;;) {
    uint64_t now = now_ns();
    bool active = false;
    if (have_new_.load()) adopt_new_flows();
    if (stop_.load(std::memory_order_relaxed)) {
      if (!stop_since) {
        stop_since = now;
        for (auto& f : flows_) f->take_submissions(now);  // what was posted before close goes out
      }
      // Drain: what was posted (a collective's last credits and notes, unwaited) is
      // delivered before the flows close, within a bound (a dead peer acks nothing).
      if (!closing_since) {
        bool drained = true;
        for (auto& f : flows_) drained &= f->drained();
        if (drained || now - stop_since > kDrainNs) {
          closing_since = now;
          for (auto& f : flows_) f->set_closing();
        }
      }
      // Linger: keep acking the peer's retransmissions until it has been quiet a while.
      if (closing_since && (now - last_rx > linger_ns_ / 4 || now - closing_since > linger_ns_)) break;
    }
    if (kicked_.exchange(false, std::memory_order_seq_cst)) {
      for (auto& f : flows_) f->take_submissions(now);
    }
    // Receive and dispatch.
    size_t n = dp_->recv(rx.data(), rx.size());
    if (n) {
      active = true;
      last_rx = now;
      now = now_ns();
      for (size_t i = 0; i < n; ++i) dispatch(rx[i], now);
      stream_fence();  // payload placed with streaming stores is visible before any ack or completion
    }
    for (auto& f : flows_) send_ack(f.get(), now);  // owed or delayed ones now due; before the app hears of the data
    // Timers: retransmission timeouts and tail probes (a paced path's slot needs no timer: pump() checks it).
    if (n == 0 || ++timer_deferrals >= kMaxTimerDeferrals) {
      timer_deferrals = 0;
      for (auto& f : flows_) f->on_timer(now);
    }
    // Transmit.
    batch->n = 0;
    for (auto& f : flows_) {
      f->pump(now, batch.get());
      if (batch->n + 64 > TxBatch::kCap) {
        dp_->send(batch->pkts, batch->n);
        batch->n = 0;
        active = true;
      }
    }
    if (batch->n) {
      dp_->send(batch->pkts, batch->n);
      active = true;
    }
    bool woke = false;
    for (auto& f : flows_) {
      woke |= f->publish();
      if (active) f->publish_stats();  // nothing changed while idle (and idle loops are the spin)
    }
    if (woke) bell_->ring();
    if (active) {
      last_activity = now;
      continue;
    }
    if (now - last_activity < spin_ns) continue;
    // Idle: block until a packet, a kick, or the next timer.
    uint64_t deadline = ~0ull;
    for (auto& f : flows_) deadline = std::min(deadline, f->next_deadline(now));
    if (stop_since) deadline = std::min(deadline, now + 1'000'000);
    uint64_t idle_from = last_activity;
    sleep_until(deadline, now);
    last_activity = now_ns();
    spin_ns = last_activity - idle_from < kSpinNs ? std::min(kSpinNs, 2 * spin_ns)
                                                  : std::max(kMinSpinNs, spin_ns / 2);
    last_activity -= spin_ns / 2;  // a short spin after waking, not a full one
  }
}

}  // namespace uccl::net
