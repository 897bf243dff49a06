#include "transport/net/flow/flow.h"

#include <algorithm>
#include <cstring>

#include "common/clock.h"
#include "common/errors.h"
#include "common/stream_copy.h"

namespace uccl::net {

namespace {
constexpr size_t kMaxBurst = 44;                // packets per path choice (one full 64 KB GSO train at MTU 1472)
// Loss detection is RACK's, per path first: a packet is lost once a packet sent
// on the same path sufficiently later has been delivered. Paths differ by their
// routes' queues (on a fabric of 100 Mbit/s links, by milliseconds), so one
// window across paths either misreads that reordering as loss (a 1.25 ms window
// there: ~2 % of packets retransmitted, three quarters of them needlessly) or
// waits on every real loss; within a path packets stay in order but for the
// receiver's batching (it drains its sockets a GRO train, up to 44 packets, at a
// time), which this window covers.
constexpr uint64_t kMinReorderNs = 250'000;
// Across paths (what exposes a path's last packets, which no later packet on
// their path can) a loss is declared past the flow's RTT plus the spread of its
// paths' RTTs, and before the retransmission timer would fire.
// Both windows widen after a retransmission proves spurious (RACK's reo_wnd scaling):
// on a loaded host an engine or a softirq queue is sometimes held up for
// milliseconds, and the window doubles (up to 16x, and below a quarter of the
// minimum RTO) each time that reorders packets past it; it halves again after
// kReoDecayNs without one.
constexpr int kMaxReoShift = 4;
constexpr uint64_t kReoDecayNs = 50'000'000;
constexpr uint64_t kMaxRtoNs = 100'000'000;     // backoff cap (give-up takes ~max_retries x this)
constexpr uint64_t kProbeSilenceNs = 100'000'000;  // probe a peer silent this long
// Delayed acks: the receiver acks once per kAckEvery packets or kAckDelayNs after
// the oldest unacknowledged one (every ack costs a syscall and a trip through both
// kernels; on a slow link it also takes reverse-path bandwidth from data).
// Duplicates and completed operations are acked at once, so spurious-retransmission
// detection and completions do not wait; so is an arrival that opens a new gap
// (sequence numbers skipped), once two packets are owed: the sender's loss
// detection starts from it. Later arrivals above a gap already reported wait like
// in-order ones (at 1 % loss on a veth a gap is nearly always open, and acking every
// receive batch then cost 1 ack per 14 packets against 1 per 40; goodput at 1 %
// loss rose from 76 % to 88-100 % of the lossless figure, with the change below).
// On a slow link packets arrive further apart than kAckDelayNs, and a sprayed flow
// nearly always has a new gap (its paths reorder): every packet got its own ack
// (0.7 per packet on the fabric, ~6 % of the wire). There a lone packet now waits
// up to 1.5x the recent gap between arrivals for a partner, acks fall to one per
// two packets (ack clocking keeps the other half on time), and the sprayed
// all_to_all measured 1.157-1.163x the ideal against 1.180-1.184x (wire bytes per
// payload byte 1.09-1.11 against 1.13; at 1 % loss 1.16-1.19 against 1.19-1.20).
// At veth speed (a gap of ~1 us) nothing changes: 30 us still gathers ~50 packets.
constexpr uint32_t kAckEvery = 128;
constexpr uint64_t kAckDelayNs = 30'000;
constexpr uint64_t kMaxLoneAckDelayNs = 1'000'000;
}  // namespace

Flow::Flow(const FlowParams& p, RegionTable* own_table, TimingWheel* wheel, uint32_t wheel_base)
    : p_(p),
      table_(own_table),
      wheel_(wheel),
      wheel_base_(wheel_base),
      chunk_(p.mtu - uint32_t(sizeof(DataWire))),
      path_stats_(size_t(p.num_paths)),
      picker_(mix64(p.secret ^ uint64_t(p.my_rank) * 7919 ^ now_ns())),
      ring_(kWindow),
      rcv_bits_(kSackWords, 0) {
  tx_common_.magic = kMagic;
  tx_common_.version = kVersion;
  tx_common_.src_rank = uint16_t(p.my_rank);
  tx_common_.dst_rank = uint16_t(p.peer_rank);
  tx_common_.src_nonce = p.my_nonce;
  tx_common_.dst_nonce = p.peer_nonce;
  tx_common_.auth = conn_auth(p.secret, uint16_t(p.my_rank), uint16_t(p.peer_rank), p.my_nonce, p.peer_nonce);
  rx_auth_ = conn_auth(p.secret, uint16_t(p.peer_rank), uint16_t(p.my_rank), p.peer_nonce, p.my_nonce);
  // The flow starts with ~32 packets in flight in all, split over its paths: a
  // per-path default times 16 paths would open with a burst deeper than a slow
  // link's queue (and than the minimum RTO), which ends in spurious timeouts.
  CcParams cp{p.mtu, double(kWindow) * p.mtu};
  cp.target_ns = p.swift_target_ns;
  cp.init_window = double(p.mtu) * std::max(2, 32 / std::max(1, p.num_paths));
  paths_.resize(size_t(p.num_paths));
  for (size_t i = 0; i < paths_.size(); ++i) {
    paths_[i].cc = make_cc(p.cc, cp);
    paths_[i].stats = &path_stats_[i];
  }
  acked_scratch_.assign(paths_.size(), 0);
  sample_sent_.assign(paths_.size(), 0);
  path_rack_ns_.assign(paths_.size(), 0);
  cut_scratch_.assign(paths_.size(), 0);
  last_rx_ns_ = now_ns();
  last_rx_atomic_.store(last_rx_ns_);
}

Flow::~Flow() = default;

// ---------------------------------------------------------------- app side

void Flow::submit(std::unique_ptr<TxOp> op) {
  std::lock_guard<std::mutex> lock(in_mu_);
  incoming_.push_back(std::move(op));
}

bool Flow::probe_if_silent() {
  if (failed()) return false;
  if (now_ns() - last_rx_atomic_.load(std::memory_order_relaxed) > kProbeSilenceNs)
    probe_wanted_.store(true, std::memory_order_relaxed);
  return true;
}

void Flow::take_output(Output* out) {
  std::lock_guard<std::mutex> lock(out_mu_);
  std::swap(out->completions, out_.completions);
  std::swap(out->events, out_.events);
}

bool Flow::publish() {
  if (staged_.completions.empty() && staged_.events.empty()) return false;
  if (detached_.load(std::memory_order_relaxed)) {
    staged_.completions.clear();
    staged_.events.clear();
    return false;
  }
  std::lock_guard<std::mutex> lock(out_mu_);
  for (auto& c : staged_.completions) out_.completions.push_back(std::move(c));
  for (auto& e : staged_.events) out_.events.push_back(std::move(e));
  staged_.completions.clear();
  staged_.events.clear();
  return true;
}

void Flow::publish_stats() {
  stats_.srtt_ns.store(srtt_ns_, std::memory_order_relaxed);
  stats_.rto_ns.store(rto_ns(), std::memory_order_relaxed);
  for (auto& path : paths_) {
    path.stats->srtt_ns.store(path.srtt_ns, std::memory_order_relaxed);
    path.stats->cwnd.store(uint64_t(path.cc->window()), std::memory_order_relaxed);
    path.stats->rate_bps.store(uint64_t(path.pace_rate() * 8), std::memory_order_relaxed);
    path.stats->inflight.store(uint64_t(path.inflight), std::memory_order_relaxed);
  }
}

// ---------------------------------------------------------------- sender

std::string Flow::op_name(const TxOp& op) const {
  switch (op.kind) {
    case kOpWrite: return format_msg("write to rank ", p_.peer_rank);
    case kOpSend: return format_msg("send(tag=", op.a, ") to rank ", p_.peer_rank);
    case kOpReadReq: return format_msg("read from rank ", p_.peer_rank);
    default: return format_msg("probe of rank ", p_.peer_rank);
  }
}

void Flow::enqueue(std::unique_ptr<TxOp> op) {
  if (failed()) {
    if (!op->internal) {
      Completion c;
      c.wr_id = op->wr_id;
      c.opcode = op->opcode;
      c.peer = p_.peer_rank;
      c.ok = false;
      c.error_kind = ErrorKind::PeerFailure;
      c.error = format_msg("rank ", p_.my_rank, ": ", op_name(*op), ": ", fail_cause_);
      staged_.completions.push_back(std::move(c));
    }
    return;
  }
  op->msg_id = next_msg_++;
  TxOp* raw = op.get();
  queued_bytes_ += raw->len;
  ops_[raw->msg_id] = std::move(op);
  sendq_.push_back(raw);
}

void Flow::take_submissions(uint64_t now) {
  std::vector<std::unique_ptr<TxOp>> in;
  {
    std::lock_guard<std::mutex> lock(in_mu_);
    in.swap(incoming_);
  }
  for (auto& op : in) enqueue(std::move(op));
  if (probe_wanted_.exchange(false, std::memory_order_relaxed) && unacked_pkts_ == 0 && sendq_.empty() &&
      now - last_rx_ns_ > kProbeSilenceNs) {
    // A reliable no-op: if the peer is gone, its retransmissions run into the give-up.
    auto nop = std::make_unique<TxOp>();
    nop->kind = kOpNop;
    nop->internal = true;
    enqueue(std::move(nop));
  }
}

bool Flow::has_tx_work() const {
  if (closing_ || failed()) return false;
  return !retx_.empty() || (!sendq_.empty() && snd_nxt_ < snd_una_ + kWindow);
}

void Flow::emit(TxPkt& t, int path, uint64_t now, TxBatch* b) {
  DataWire& h = b->hdrs[b->n];
  const TxOp& op = *t.op;
  h.common = tx_common_;
  h.common.type = kData;
  h.seq = uint32_t(t.seq);
  h.msg_id = uint32_t(op.msg_id);
  h.index = uint32_t(t.off / chunk_);
  h.op = op.kind;
  h.flags = uint8_t(op.flags | (t.off + t.len == op.len ? kFlagLast : 0));
  h.path = uint16_t(path);
  h.imm = op.imm;
  h.total = carries_c(op.kind) ? op.c : op.len;
  h.a = op.a;
  h.b = op.b;
  b->pkts[b->n] = TxPacket{path, &p_.peer_addr, &h, uint32_t(sizeof(h)), t.len ? op.src + t.off : nullptr, t.len};
  ++b->n;
  const double wire = double(t.len + sizeof(DataWire));
  t.path = uint16_t(path);
  t.sent_ns = now;
  t.state = kInFlight;
  ++t.tx_count;
  Path& ps = paths_[size_t(path)];
  ps.inflight += wire;
  sendlog_.push_back(SendRec{t.seq, t.tx_count, now});
  bump(ps.stats->packets, 1);
  bump(ps.stats->bytes, uint64_t(wire));
  bump(stats_.packets_sent, 1);
  bump(stats_.bytes_sent, t.len);
  if (t.tx_count > 1) {
    bump(ps.stats->retransmits, 1);
    bump(stats_.retransmits, 1);
  }
}

void Flow::pump(uint64_t now, TxBatch* b) {
  if (closing_ || failed()) return;
  const double mss = double(p_.mtu);
  while (b->n < TxBatch::kCap) {
    while (!retx_.empty() && pkt(retx_.front()).state != kLost) retx_.pop_front();
    bool have_new = !sendq_.empty() && snd_nxt_ < snd_una_ + kWindow;
    if (retx_.empty() && !have_new) return;
    // New data waits for a path with room for a full train (or for what is left).
    const double want = retx_.empty() ? double(std::min<uint64_t>(queued_bytes_, kMaxBurst * chunk_)) : 0;
    int p = picker_.pick(paths_, now, mss, want);
    if (p < 0) return;  // every path is out of window or waiting for its pacing slot
    Path& path = paths_[size_t(p)];
    double rate = path.pace_rate();
    size_t burst = rate > 0 ? 1 : std::clamp<size_t>(size_t(path.room() / mss) + 1, 1, kMaxBurst);
    uint64_t bytes = 0;
    for (size_t k = 0; k < burst && b->n < TxBatch::kCap; ++k) {
      while (!retx_.empty() && pkt(retx_.front()).state != kLost) retx_.pop_front();
      TxPkt* t = nullptr;
      if (!retx_.empty()) {
        t = &pkt(retx_.front());
        retx_.pop_front();
        ++unacked_pkts_;  // back in flight
      } else if (!sendq_.empty() && snd_nxt_ < snd_una_ + kWindow) {
        TxOp* op = sendq_.front();
        t = &pkt(snd_nxt_);
        *t = TxPkt{};
        t->seq = snd_nxt_++;
        t->op = op;
        t->off = op->next_off;
        t->len = uint32_t(std::min<uint64_t>(chunk_, op->len - op->next_off));
        op->next_off += t->len;
        queued_bytes_ -= t->len;
        ++op->unacked;
        ++unacked_pkts_;
        if (op->next_off >= op->len) {
          op->all_sent = true;
          sendq_.pop_front();
        }
      } else {
        break;
      }
      emit(*t, p, now, b);
      bytes += t->len + sizeof(DataWire);
    }
    if (rate > 0) {
      path.next_tx_ns = now + uint64_t(double(bytes) * 1e9 / rate);
      wheel_->schedule(wheel_base_ + uint32_t(p), path.next_tx_ns, now);
    }
  }
}

void Flow::ack_pkt(uint64_t seq, std::vector<uint64_t>* acked_by_path, uint64_t* newest_sent) {
  if (seq < snd_una_ || seq >= snd_nxt_) return;
  TxPkt& t = pkt(seq);
  if (t.seq != seq || t.state == kAcked || t.state == kFree) return;
  if (t.state == kInFlight) {
    double wire = double(t.len + sizeof(DataWire));
    Path& path = paths_[t.path];
    path.inflight = std::max(0.0, path.inflight - wire);
    (*acked_by_path)[t.path] += uint64_t(wire);
    *newest_sent = std::max(*newest_sent, t.sent_ns);
    // Karn: only a first transmission's send time is unambiguous.
    if (t.tx_count == 1) sample_sent_[t.path] = std::max(sample_sent_[t.path], t.sent_ns);
    --unacked_pkts_;
  }
  // kLost: a spurious loss verdict; the queued retransmission is skipped.
  if (t.state == kLost) widen_reordering(now_ns());
  t.state = kAcked;
  TxOp* op = t.op;
  --op->unacked;
  try_complete(op);
}

void Flow::on_ack(const AckHeader& a, uint64_t now) {
  last_rx_ns_ = now;
  last_rx_atomic_.store(now, std::memory_order_relaxed);
  bump(stats_.acks_received, 1);
  if (a.cum_ack > snd_nxt_ || (a.echo_path >= paths_.size())) {
    drops_.add(kDropMalformed);
    return;
  }
  if (a.rejects > peer_rejects_) peer_rejects_ = a.rejects;
  note_if_spurious(a.echo_seq, now);
  std::fill(acked_scratch_.begin(), acked_scratch_.end(), 0);
  std::fill(sample_sent_.begin(), sample_sent_.end(), 0);
  uint64_t newest_sent = 0;
  uint64_t before = unacked_pkts_;
  uint64_t una_before = snd_una_;
  for (uint64_t s = snd_una_; s < a.cum_ack; ++s) ack_pkt(s, &acked_scratch_, &newest_sent);
  // Only what the last ack did not already report: behind a hole the same
  // thousands of bits arrive again on every ack.
  const bool newer = a.cum_ack >= last_sack_cum_;
  for (size_t w = 0; w < kSackWords; ++w) {
    uint64_t bits = a.sack[w];
    if (newer && bits) bits &= ~bits_from(last_sack_, a.cum_ack - last_sack_cum_ + 64 * w);
    while (bits) {
      int i = __builtin_ctzll(bits);
      bits &= bits - 1;
      ack_pkt(a.cum_ack + w * 64 + uint64_t(i), &acked_scratch_, &newest_sent);
    }
  }
  if (newer) {
    std::copy(std::begin(a.sack), std::end(a.sack), last_sack_.begin());
    last_sack_cum_ = a.cum_ack;
  }
  ack_pkt(a.echo_seq, &acked_scratch_, &newest_sent);
  while (snd_una_ < snd_nxt_ && pkt(snd_una_).state == kAcked) ++snd_una_;
  // The flow's RTT (for the RTO) follows the newest first transmission acked.
  uint64_t rtt = 0, newest_first = *std::max_element(sample_sent_.begin(), sample_sent_.end());
  if (newest_first && newest_first <= now) {
    rtt = now - newest_first;
    if (srtt_ns_ == 0) {
      srtt_ns_ = rtt;
      rttvar_ns_ = rtt / 2;
    } else {
      uint64_t dev = rtt > srtt_ns_ ? rtt - srtt_ns_ : srtt_ns_ - rtt;
      rttvar_ns_ = (3 * rttvar_ns_ + dev) / 4;
      srtt_ns_ = (7 * srtt_ns_ + rtt) / 8;
    }
  }
  // Each path's CC gets a sample on every ack that covers one of its packets
  // (the newest one it sent), not only the path the echo names: with many
  // paths, echoes alone would leave most paths' delay signal stale.
  // The CC's delay leaves out what is not the forward path's doing: the time the
  // newest arrival waited for this ack (the others waited longer: a safe
  // underestimate) and the ack's queueing on the way back.
  const uint64_t not_forward = uint64_t(a.hold_us) * 1000 + reverse_.sample(now, a.sent_ns);
  for (size_t p = 0; p < paths_.size(); ++p) {
    uint64_t prtt = sample_sent_[p] && sample_sent_[p] <= now ? now - sample_sent_[p] : 0;
    if (prtt) paths_[p].rtt_sample(prtt);
    if (sample_sent_[p] > path_rack_ns_[p]) path_rack_ns_[p] = sample_sent_[p];
    const uint64_t delay = prtt ? std::max<uint64_t>(prtt > not_forward ? prtt - not_forward : 0, 1) : 0;
    if (acked_scratch_[p] || prtt)
      paths_[p].cc->on_ack(now, acked_scratch_[p], delay, paths_[p].srtt_ns ? paths_[p].srtt_ns : srtt_ns_);
  }
  if (unacked_pkts_ < before || snd_una_ > una_before) {  // progress: the peer is alive
    tail_probed_ = false;
    consecutive_rtos_ = 0;
    backoff_ = 0;
    last_rto_ns_ = 0;
  }
  if (newest_sent > rack_sent_ns_) rack_sent_ns_ = newest_sent;
  detect_losses(now);
  if (held_) recheck_held();
}

void Flow::mark_lost(TxPkt& t, bool timeout) {
  Path& path = paths_[t.path];
  path.inflight = std::max(0.0, path.inflight - double(t.len + sizeof(DataWire)));
  t.state = kLost;
  --unacked_pkts_;
  retx_.push_back(t.seq);
  bump(path.stats->losses, 1);
  if (timeout) bump(path.stats->timeouts, 1);
}

void Flow::note_if_spurious(uint64_t echo_seq, uint64_t now) {
  // The ack names its newest arrival. If that packet was retransmitted and an
  // earlier ack already covered it, the arrival was a duplicate: the original
  // was only late, and the retransmission spurious (a DSACK, in TCP's terms).
  if (echo_seq >= snd_nxt_) return;
  const TxPkt& t = pkt(echo_seq);
  if (t.seq == echo_seq && t.tx_count > 1 && (t.state == kAcked || echo_seq < snd_una_)) widen_reordering(now);
}

void Flow::widen_reordering(uint64_t now) {
  if (now - last_spurious_ns_ < srtt_ns_) return;  // once per round trip
  reo_shift_ = std::min(reo_shift_ + 1, kMaxReoShift);
  last_spurious_ns_ = now;
}

void Flow::detect_losses(uint64_t now) {
  if (reo_shift_ > 0 && now - last_spurious_ns_ > kReoDecayNs) {
    --reo_shift_;
    last_spurious_ns_ = now;
  }
  // The widened windows stay under a quarter of the minimum RTO (within a path)
  // and under the RTO (across paths): beyond, real losses would wait for the timer.
  const uint64_t rto = rto_ns();
  const uint64_t path_reo = path_reorder_ns();
  uint64_t fastest = ~0ull, slowest = 0;
  for (const Path& path : paths_) {
    if (!path.srtt_ns) continue;
    fastest = std::min(fastest, path.srtt_ns);
    slowest = std::max(slowest, path.srtt_ns);
  }
  const uint64_t spread = slowest > fastest ? slowest - fastest : 0;
  const uint64_t across = (std::max(kMinReorderNs, srtt_ns_) + spread) << reo_shift_;
  const uint64_t any_reo = std::max(path_reo, std::min(across, rto - rto / 8));
  std::fill(cut_scratch_.begin(), cut_scratch_.end(), 0);
  // Records still in flight but not yet late are moved down to [0, keep); stale ones
  // (acked, or superseded by a retransmission) and the ones found lost are dropped.
  // Dropping from the middle matters: behind a hole not yet judged lost, every
  // packet acked since stays in the log, and each ack walked them all again (at 1 %
  // loss on a veth, thousands per ack: the sender's largest cost).
  size_t keep = 0, i = 0;
  for (; i < sendlog_.size(); ++i) {
    const SendRec r = sendlog_[i];
    TxPkt& t = pkt(r.seq);
    if (t.seq != r.seq || t.state != kInFlight || t.tx_count != r.tx_count) continue;
    if (r.sent_ns + path_reo >= rack_sent_ns_) break;  // nothing from here on is late by either rule
    const uint16_t p = t.path;
    if (r.sent_ns + path_reo >= path_rack_ns_[p] && r.sent_ns + any_reo >= rack_sent_ns_) {
      sendlog_[keep++] = r;  // its path has delivered nothing sent well after it yet
      continue;
    }
    mark_lost(t, false);
    if (!cut_scratch_[p]) {  // one congestion signal per path per ack
      cut_scratch_[p] = 1;
      paths_[p].cc->on_loss(now, paths_[p].srtt_ns ? paths_[p].srtt_ns : srtt_ns_);
    }
  }
  if (i > keep) {  // kept records go just before i, in order; the rest is popped
    std::move_backward(sendlog_.begin(), sendlog_.begin() + ptrdiff_t(keep), sendlog_.begin() + ptrdiff_t(i));
    sendlog_.erase(sendlog_.begin(), sendlog_.begin() + ptrdiff_t(i - keep));
  }
}

uint64_t Flow::path_reorder_ns() const {
  return std::min(kMinReorderNs << reo_shift_, std::max(kMinReorderNs, uint64_t(p_.rto_ms * 1e6) / 4));
}

uint64_t Flow::path_timeout_ns(const Path& path) const {
  if (!path.srtt_ns) return ~0ull;  // no sample yet: only the RTO covers it
  return path.srtt_ns + 4 * path.rttvar_ns + path_reorder_ns();
}

uint64_t Flow::soonest_path_timeout_ns() const {
  uint64_t soonest = ~0ull;
  for (const Path& path : paths_) soonest = std::min(soonest, path_timeout_ns(path));
  return soonest;
}

void Flow::probe_tail(uint64_t now) {
  // A flow's last packets have no later packet to expose their loss, and would
  // wait for the flow-wide RTO (>= 5 ms; on the fabric that stalled the end of
  // most operations). At the tail, a packet its own path should have delivered
  // by now (packets on a path arrive in order: its RTT, four deviations and the
  // reordering window) is resent once as a probe, as RACK-TLP does. Its ack then
  // exposes every earlier loss to detect_losses. One probe per tail: a spurious
  // one costs a packet, a storm of them a window.
  if (tail_probed_ || !sendq_.empty() || !retx_.empty()) return;
  const uint64_t soonest = soonest_path_timeout_ns();
  if (soonest == ~0ull) return;
  for (size_t i = 0; i < sendlog_.size(); ++i) {
    const SendRec& r = sendlog_[i];
    if (r.sent_ns + soonest > now) break;  // this one and every later one are within every path's time
    TxPkt& t = pkt(r.seq);
    if (t.seq != r.seq || t.state != kInFlight || t.tx_count != r.tx_count) continue;
    if (r.sent_ns + path_timeout_ns(paths_[t.path]) > now) continue;
    mark_lost(t, false);
    tail_probed_ = true;
    bump(stats_.tail_probes, 1);
    return;
  }
}

uint64_t Flow::rto_ns() const {
  uint64_t base = std::max<uint64_t>(uint64_t(p_.rto_ms * 1e6), srtt_ns_ + 4 * rttvar_ns_);
  uint64_t cap = std::max<uint64_t>(kMaxRtoNs, 4 * uint64_t(p_.rto_ms * 1e6));
  return std::min(cap, base << std::min(backoff_, 20));
}

uint64_t Flow::ack_due_ns() const {
  if (ack_now_ || unacked_rx_ >= kAckEvery || (new_gap_ && unacked_rx_ >= 2)) return 0;
  if (unacked_rx_ >= 2) return first_unacked_ns_ + kAckDelayNs;
  // A lone packet waits for a partner about as long as packets have been arriving apart.
  const uint64_t lone = std::clamp<uint64_t>(rx_gap_ns_ * 3 / 2, kAckDelayNs, kMaxLoneAckDelayNs);
  return first_unacked_ns_ + lone;
}

uint64_t Flow::next_deadline() const {
  const uint64_t ack = need_ack_ ? ack_due_ns() : ~0ull;
  uint64_t rto = ~0ull, probe = ~0ull;
  for (const SendRec& r : sendlog_) {
    const TxPkt& t = ring_[r.seq % kWindow];
    if (t.seq == r.seq && t.state == kInFlight && t.tx_count == r.tx_count) {
      rto = std::max(r.sent_ns, last_rto_ns_) + rto_ns();
      break;
    }
  }
  if (rto != ~0ull && !tail_probed_ && sendq_.empty() && retx_.empty()) {
    // The tail probe's time: the first in-flight packet to outlive its own path
    // (exactly, not a guess: a deadline already past would keep the engine spinning).
    const uint64_t soonest = soonest_path_timeout_ns();
    for (const SendRec& r : sendlog_) {
      if (soonest == ~0ull || r.sent_ns + soonest >= probe) break;  // later ones expire later still
      const TxPkt& t = ring_[r.seq % kWindow];
      if (t.seq == r.seq && t.state == kInFlight && t.tx_count == r.tx_count && paths_[t.path].srtt_ns)
        probe = std::min(probe, r.sent_ns + path_timeout_ns(paths_[t.path]));
    }
  }
  return std::min({ack, rto, probe});
}

void Flow::on_timer(uint64_t now) {
  if (failed()) return;
  while (!sendlog_.empty()) {
    const SendRec& r = sendlog_.front();
    const TxPkt& t = pkt(r.seq);
    if (t.seq == r.seq && t.state == kInFlight && t.tx_count == r.tx_count) break;
    sendlog_.pop_front();
  }
  if (sendlog_.empty()) return;
  probe_tail(now);
  const uint64_t rto = rto_ns();
  if (sendlog_.front().sent_ns + rto > now) return;
  // One timeout per (backed-off) RTO period: when a stall leaves many packets
  // older than the RTO, each would otherwise time out on the next turn, and
  // max_retries "consecutive" timeouts would pass within milliseconds.
  if (last_rto_ns_ && now - last_rto_ns_ < rto) return;
  last_rto_ns_ = now;
  if (++consecutive_rtos_ > p_.max_retries) {
    fail_all(ErrorKind::PeerFailure,
             format_msg("rank ", p_.peer_rank, " stopped acknowledging (", p_.max_retries,
                        " consecutive retransmission timeouts); it is dead or unreachable"));
    return;
  }
  bump(stats_.timeouts, 1);
  // Retransmit only the oldest packet, as a probe. On a loaded host most
  // timeouts are spurious (an engine was descheduled longer than the RTO), and
  // resending the whole window then costs a window of duplicates. If the loss
  // was real, the probe's ack makes every packet sent before it count as lost
  // (RACK in detect_losses), so a lost window is still repaired one RTT later.
  TxPkt& t = pkt(sendlog_.front().seq);
  sendlog_.pop_front();
  const uint16_t path = t.path;
  mark_lost(t, true);
  // For the same reason the first timeout after progress only probes; the
  // window is cut from the second on (measured through a 200 Mbit/s tbf on the
  // loaded host: ~100 spurious timeouts in 5 s, each halving a path's window,
  // left the link 89 % busy instead of 93 %). Real loss still cuts windows
  // through RACK's loss signal.
  if (consecutive_rtos_ > 1) paths_[path].cc->on_timeout(now);
  ++backoff_;
}

void Flow::try_complete(TxOp* op) {
  if (!op->all_sent || op->unacked) return;
  if (op->kind == kOpReadReq && !op->internal && !op->failed && !op->read_done) return;
  if (op->kind == kOpWrite && !op->failed && peer_rejects_ > errors_received_) {
    held_ = true;  // a refusal is on its way: it may be this write's
    return;
  }
  finish(op);
}

void Flow::finish(TxOp* op) {
  if (!op->internal) {
    Completion c;
    c.wr_id = op->wr_id;
    c.opcode = op->opcode;
    c.peer = p_.peer_rank;
    c.len = op->kind == kOpReadReq ? op->c : op->len;
    c.tag = op->kind == kOpSend ? op->a : 0;
    if (op->failed) {
      c.ok = false;
      c.error_kind = op->error_kind;
      c.error = op->error;
    }
    staged_.completions.push_back(std::move(c));
  }
  ops_.erase(op->msg_id);
}

void Flow::recheck_held() {
  if (peer_rejects_ > errors_received_) return;
  held_ = false;
  std::vector<TxOp*> ready;
  for (auto& [id, op] : ops_)
    if (op->all_sent && !op->unacked) ready.push_back(op.get());
  for (TxOp* op : ready) try_complete(op);
}

void Flow::fail_all(ErrorKind kind, const std::string& cause) {
  fail_cause_ = cause;
  failed_.store(true, std::memory_order_release);
  for (auto& [id, op] : ops_) {
    if (op->internal) continue;
    Completion c;
    c.wr_id = op->wr_id;
    c.opcode = op->opcode;
    c.peer = p_.peer_rank;
    c.ok = false;
    c.error_kind = kind;
    c.error = format_msg("rank ", p_.my_rank, ": ", op_name(*op), ": ", cause);
    staged_.completions.push_back(std::move(c));
  }
  ops_.clear();
  sendq_.clear();
  queued_bytes_ = 0;
  retx_.clear();
  sendlog_.clear();
  for (auto& t : ring_) t = TxPkt{};
  for (auto& path : paths_) path.inflight = 0;
  unacked_pkts_ = 0;
  snd_una_ = snd_nxt_;
}

// ---------------------------------------------------------------- receiver

void Flow::on_data(const DataHeader& h, const char* payload, uint32_t len, const RxPacket& from, uint64_t now) {
  if (last_rx_ns_ && now > last_rx_ns_) {
    // An idle spell between operations says nothing about the arrival rate: capped.
    const int64_t gap = int64_t(std::min(now - last_rx_ns_, kMaxLoneAckDelayNs)) - int64_t(rx_gap_ns_);
    rx_gap_ns_ = uint64_t(int64_t(rx_gap_ns_) + gap / 8);
  } else if (last_rx_ns_) {
    rx_gap_ns_ -= rx_gap_ns_ / 8;  // same receive batch
  }
  last_rx_ns_ = now;
  last_rx_atomic_.store(now, std::memory_order_relaxed);
  const uint64_t seq = widen32(h.seq32, rcv_cum_);
  const bool dup = seq < rcv_cum_ || (seq < rcv_cum_ + kWindow && rcv_has(seq));
  // Answer on the path the packet came in on, naming the newest arrival (the
  // sender takes RTT from its own send times).
  auto owe_ack = [&] {
    if (!need_ack_) first_unacked_ns_ = now;
    need_ack_ = true;
    ++unacked_rx_;
    echo_seq_ = seq;
    echo_path_ = h.path;
    echo_arrival_ns_ = now;
    reply_queue_ = from.queue;
    reply_ip_ = from.src_ipv4;
    reply_port_ = from.src_port;
  };
  if (dup) {
    drops_.add(kDropDuplicate);
    owe_ack();  // the ack that covered it may have been lost
    ack_now_ = true;
    return;
  }
  if (closing_) {
    drops_.add(kDropClosing);
    return;
  }
  if (seq >= rcv_cum_ + kWindow) {
    drops_.add(kDropOutOfWindow);
    return;
  }
  if (h.path >= 256) {
    drops_.add(kDropMalformed);
    return;
  }
  bump(stats_.packets_received, 1);
  bump(stats_.bytes_received, len);
  // From here on the sequence number counts as received, whatever becomes of the payload.
  rcv_bits_[(seq % kWindow) / 64] |= 1ull << (seq % 64);
  while (rcv_has(rcv_cum_)) {
    rcv_bits_[(rcv_cum_ % kWindow) / 64] &= ~(1ull << (rcv_cum_ % 64));
    ++rcv_cum_;
  }
  owe_ack();
  if (seq > rcv_next_high_) new_gap_ = true;  // something sent before it is missing
  rcv_next_high_ = std::max(rcv_next_high_, seq + 1);
  const uint64_t msg_id = widen32(h.msg32, rcv_next_msg_);
  if (msg_id < rcv_next_msg_) {
    drops_.add(kDropMalformed);  // belongs to an operation already complete
    return;
  }
  if (!last_rx_op_ || last_rx_msg_ != msg_id) {  // consecutive packets mostly share an operation
    last_rx_op_ = &rx_ops_[msg_id];
    last_rx_msg_ = msg_id;
  }
  RxOp& op = *last_rx_op_;
  if (!op.seen) {
    op.seen = true;
    op.kind = h.op;
    op.flags = h.flags;
    op.total = h.total;
    op.a = h.a;
    op.b = h.b;
    op.c = h.c;
    op.imm = h.imm;
  } else if (op.kind != h.op || op.total != h.total || op.a != h.a || op.b != h.b) {
    drops_.add(kDropMalformed);
    return;
  }
  place(h, msg_id, op, payload, len);
  op.received += len;
  if (op.complete()) {
    ack_now_ = true;  // the sender completes the operation on this ack
    deliver_in_order();  // only a completed operation can release events
  }
}

void Flow::refuse(RxOp& op, uint64_t msg_id, uint64_t code, uint64_t region_len) {
  if (op.rejected) return;
  op.rejected = true;
  ++rejects_;
  bump(stats_.refused, 1);
  auto err = std::make_unique<TxOp>();
  err->kind = kOpError;
  err->internal = true;
  err->a = msg_id;
  err->b = code;
  err->c = region_len;
  enqueue(std::move(err));
}

void Flow::place(const DataHeader& h, uint64_t msg_id, RxOp& op, const char* payload, uint32_t len) {
  switch (op.kind) {
    case kOpWrite: {
      if (op.rejected) {
        drops_.add(kDropOutOfBounds);
        return;
      }
      auto r = table_->lookup(op.a);
      uint64_t code = 0;
      if (!r)
        code = kErrNoKey;
      else if (!(r->flags & kRemoteWrite))
        code = kErrNoWriteAccess;
      else if (op.b > r->len || op.total > r->len - op.b)
        code = kErrBounds;
      if (code) {
        drops_.add(kDropOutOfBounds);
        refuse(op, msg_id, code, r ? r->len : 0);
        return;
      }
      char* dst = reinterpret_cast<char*>(r->addr + op.b + h.frag_off);
      // A large write is not read again before the application looks at it:
      // streaming stores skip reading each destination line first (measured
      // about 3x cheaper into a cold 16 MiB region). The engine fences after
      // each receive batch, before acks or completions leave.
      if (op.total >= kStreamOutputMin)
        stream_store(dst, payload, len);
      else if (len)
        std::memcpy(dst, payload, len);
      return;
    }
    case kOpSend:
      if (!op.data && op.total) op.data.reset(new char[op.total]);
      if (len) std::memcpy(op.data.get() + h.frag_off, payload, len);
      return;
    case kOpReadResp: {
      auto it = ops_.find(op.a);
      TxOp* req = it == ops_.end() ? nullptr : it->second.get();
      if (!req || req->kind != kOpReadReq || req->failed || op.total != req->c) {
        drops_.add(kDropBadRead);
        return;
      }
      if (len) std::memcpy(req->read_dst + h.frag_off, payload, len);
      req->read_got += len;
      if (req->read_got == req->c) {
        req->read_done = true;
        try_complete(req);
      }
      return;
    }
    case kOpError: {
      ++errors_received_;
      auto it = ops_.find(op.a);
      if (it != ops_.end() && !it->second->internal) {
        TxOp* bad = it->second.get();
        bad->failed = true;
        bad->error_kind = ErrorKind::Access;
        const char* what = bad->kind == kOpReadReq ? "read from" : "write to";
        std::string cause;
        switch (op.b) {
          case kErrNoKey:
            cause = format_msg("remote key 0x", std::hex, bad->a, std::dec,
                               " is not registered there (never registered, or deregistered)");
            break;
          case kErrNoWriteAccess:
            cause = format_msg("region 0x", std::hex, bad->a, std::dec, " does not grant remote write access");
            break;
          case kErrNoReadAccess:
            cause = format_msg("region 0x", std::hex, bad->a, std::dec, " does not grant remote read access");
            break;
          default:
            cause = format_msg(bad->kind == kOpReadReq ? bad->c : bad->len, " bytes at offset ", bad->b,
                               " fall outside the remote region of ", op.c, " bytes");
        }
        bad->error = format_msg("rank ", p_.my_rank, ": ", what, " rank ", p_.peer_rank, ": ", cause);
        try_complete(bad);
      }
      recheck_held();
      return;
    }
    default:  // read requests and probes carry no payload; served in order
      return;
  }
}

void Flow::serve_read(const RxOp& op, uint64_t msg_id) {
  auto r = table_->lookup(op.a);
  uint64_t code = 0;
  if (!r)
    code = kErrNoKey;
  else if (!(r->flags & kRemoteRead))
    code = kErrNoReadAccess;
  else if (op.b > r->len || op.c > r->len - op.b)
    code = kErrBounds;
  if (code) {
    bump(stats_.refused, 1);
    auto err = std::make_unique<TxOp>();
    err->kind = kOpError;
    err->internal = true;
    err->a = msg_id;
    err->b = code;
    err->c = r ? r->len : 0;
    enqueue(std::move(err));
    return;
  }
  auto resp = std::make_unique<TxOp>();
  resp->kind = kOpReadResp;
  resp->internal = true;
  resp->src = reinterpret_cast<const char*>(r->addr + op.b);
  resp->len = op.c;
  resp->a = msg_id;
  enqueue(std::move(resp));
}

void Flow::deliver_in_order() {
  for (auto it = rx_ops_.find(rcv_next_msg_); it != rx_ops_.end() && it->second.complete();
       it = rx_ops_.find(rcv_next_msg_)) {
    RxOp& op = it->second;
    if (op.kind == kOpWrite && !op.rejected && (op.flags & kFlagImm)) {
      RxEvent e;
      e.key_or_tag = op.a;
      e.offset = op.b;
      e.len = op.total;
      e.imm = op.imm;
      staged_.events.push_back(std::move(e));
    } else if (op.kind == kOpSend) {
      RxEvent e;
      e.is_message = true;
      e.key_or_tag = op.a;
      e.len = op.total;
      e.data = std::move(op.data);
      staged_.events.push_back(std::move(e));
    } else if (op.kind == kOpReadReq) {
      serve_read(op, it->first);
    }
    if (last_rx_op_ == &it->second) last_rx_op_ = nullptr;
    rx_ops_.erase(it);
    ++rcv_next_msg_;
  }
}

bool Flow::take_ack(AckHeader* a, int* queue, uint32_t* ip, uint16_t* port, uint64_t now) {
  if (!need_ack_ || now < ack_due_ns()) return false;  // delayed
  need_ack_ = false;
  ack_now_ = false;
  new_gap_ = false;
  unacked_rx_ = 0;
  a->common = tx_common_;
  a->common.type = kAck;
  a->cum_ack = rcv_cum_;
  a->echo_seq = echo_seq_;
  a->rejects = rejects_;
  a->echo_path = echo_path_;
  a->hold_us = uint16_t(std::min<uint64_t>(now > echo_arrival_ns_ ? (now - echo_arrival_ns_) / 1000 : 0, 65535));
  a->sent_ns = now;
  // Rotate the receive ring so bit i of the ack means seq cum_ack + i.
  const size_t start = size_t(rcv_cum_ % kWindow);
  const size_t w0 = start / 64, sh = start % 64;
  for (size_t k = 0; k < kSackWords; ++k) {
    uint64_t lo = rcv_bits_[(w0 + k) % kSackWords];
    uint64_t hi = rcv_bits_[(w0 + k + 1) % kSackWords];
    a->sack[k] = sh ? (lo >> sh) | (hi << (64 - sh)) : lo;
  }
  *queue = reply_queue_;
  *ip = reply_ip_;
  *port = reply_port_;
  bump(stats_.acks_sent, 1);
  return true;
}

}  // namespace uccl::net
