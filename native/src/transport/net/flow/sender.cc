#include "transport/net/flow/sender.h"

#include <algorithm>
#include <cstring>

#include "common/clock.h"
#include "transport/net/rtt.h"
#include "transport/net/flow/read_protocol.h"

namespace uccl::net {

namespace {
constexpr size_t kMaxBurst = 44;  // packets per path choice (one full 64 KB GSO train at MTU 1472)
// Loss detection (RACK-like, docs/net-flow.md): within a path a packet is lost
// once one sent on it kMinReorderNs (widened) later has been delivered; across
// paths only past the flow's RTT plus the spread of its paths' RTTs.
constexpr uint64_t kMinReorderNs = 250'000;
// Both windows double (up to 1 << kMaxReoShift) when a retransmission proves
// spurious, and halve again after kReoDecayNs without one.
constexpr int kMaxReoShift = 4;
constexpr uint64_t kReoDecayNs = 50'000'000;
constexpr uint64_t kMaxRtoNs = 100'000'000;  // backoff cap (give-up takes ~max_retries x this)
}  // namespace

Sender::Sender(const FlowParams& p, const CommonHeader& tx_common, FlowStats& stats, DropCounters& drops,
               std::vector<Completion>& completions)
    : p_(p),
      tx_common_(tx_common),
      chunk_(p.mtu - uint32_t(sizeof(DataWire))),
      stats_(stats),
      drops_(drops),
      completions_(completions),
      ring_(kWindow),
      path_stats_(size_t(p.num_paths)),
      picker_(mix64(p.secret ^ uint64_t(p.my_rank) * 7919 ^ now_ns())) {
  // The flow opens with ~32 packets in flight in all, split over its paths (a
  // per-path default times 16 paths would overrun a slow link's queue).
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
}

// ---------------------------------------------------------------- operations

void Sender::enqueue(std::unique_ptr<TxOp> op) {
  op->msg_id = next_msg_++;
  TxOp* raw = op.get();
  queued_bytes_ += raw->len;
  ops_[raw->msg_id] = std::move(op);
  sendq_.push_back(raw);
}

void Sender::try_complete(TxOp* op) {
  if (!op->all_sent || op->unacked) return;
  if (op->kind == kOpReadReq && !op->internal && !op->failed && !op->read_done) return;
  if (op->kind == kOpWrite && !op->failed && hold_.refusal_pending()) {
    hold_.held = true;  // a refusal is on its way: it may be this write's
    return;
  }
  finish(op);
}

void Sender::finish(TxOp* op) {
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
    completions_.push_back(std::move(c));
  }
  ops_.erase(op->msg_id);
}

void Sender::recheck_held() {
  if (hold_.refusal_pending()) return;
  hold_.held = false;
  std::vector<TxOp*> ready;
  for (auto& [id, op] : ops_)
    if (op->all_sent && !op->unacked) ready.push_back(op.get());
  for (TxOp* op : ready) try_complete(op);
}

void Sender::on_read_response(uint64_t req_msg_id, uint64_t total, uint64_t frag_off, const char* payload,
                              uint32_t len) {
  auto it = ops_.find(req_msg_id);
  TxOp* req = it == ops_.end() ? nullptr : it->second.get();
  switch (place_read_response(req, total, frag_off, payload, len)) {
    case ResponsePart::kBad: drops_.add(kDropBadRead); return;
    case ResponsePart::kPartial: return;
    case ResponsePart::kLast: try_complete(req); return;
  }
}

void Sender::on_refusal(uint64_t refused_msg_id, uint64_t code, uint64_t region_len) {
  hold_.on_error_packet();
  auto it = ops_.find(refused_msg_id);
  if (it != ops_.end() && !it->second->internal) {
    TxOp* bad = it->second.get();
    bad->failed = true;
    bad->error_kind = ErrorKind::Access;
    bad->error = refusal_message(*bad, code, region_len, p_.my_rank, p_.peer_rank);
    try_complete(bad);
  }
  recheck_held();
}

void Sender::fail_all(ErrorKind kind, const std::string& cause) {
  for (auto& [id, op] : ops_)
    if (!op->internal) completions_.push_back(peer_failure(*op, kind, p_.my_rank, p_.peer_rank, cause));
  ops_.clear();
  sendq_.clear();
  queued_bytes_ = 0;
  retx_.clear();
  timeout_probe_ = ~0ull;
  sendlog_.clear();
  for (auto& t : ring_) t = TxPkt{};
  for (auto& path : paths_) path.inflight = 0;
  unacked_pkts_ = 0;
  snd_una_ = snd_nxt_;
}

void Sender::publish_stats() {
  stats_.srtt_ns.store(srtt_ns_, std::memory_order_relaxed);
  stats_.rto_ns.store(rto_ns(), std::memory_order_relaxed);
  for (auto& path : paths_) {
    path.stats->srtt_ns.store(path.srtt_ns, std::memory_order_relaxed);
    path.stats->cwnd.store(uint64_t(path.cc->window()), std::memory_order_relaxed);
    path.stats->rate_bps.store(uint64_t(path.pace_rate() * 8), std::memory_order_relaxed);
    path.stats->inflight.store(uint64_t(path.inflight), std::memory_order_relaxed);
  }
}

// ---------------------------------------------------------------- transmit

void Sender::emit(TxPkt& t, int path, uint64_t now, TxBatch* b) {
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

void Sender::pump(uint64_t now, TxBatch* b) {
  if (closing_) return;
  const double mss = double(p_.mtu);
  // A timeout's probe goes out on its own path even when the window is full:
  // after a timeout the packets still counted in flight may be gone, and a probe
  // that waited for room would never leave.
  if (timeout_probe_ != ~0ull && b->n < TxBatch::kCap) {
    TxPkt& t = pkt(timeout_probe_);
    const uint64_t seq = timeout_probe_;
    timeout_probe_ = ~0ull;
    if (t.seq == seq && t.state == kLost) {
      ++unacked_pkts_;  // back in flight; its retx_ entry is skipped as stale
      emit(t, t.path, now, b);
    }
  }
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
    if (rate > 0) path.next_tx_ns = now + uint64_t(double(bytes) * 1e9 / rate);
  }
}

// ---------------------------------------------------------------- acks

void Sender::ack_pkt(uint64_t seq, uint64_t now, uint64_t* newest_sent) {
  if (seq < snd_una_ || seq >= snd_nxt_) return;
  TxPkt& t = pkt(seq);
  if (t.seq != seq || t.state == kAcked || t.state == kFree) return;
  if (t.state == kInFlight) {
    double wire = double(t.len + sizeof(DataWire));
    Path& path = paths_[t.path];
    path.inflight = std::max(0.0, path.inflight - wire);
    acked_scratch_[t.path] += uint64_t(wire);
    *newest_sent = std::max(*newest_sent, t.sent_ns);
    // Karn: only a first transmission's send time is unambiguous.
    if (t.tx_count == 1) sample_sent_[t.path] = std::max(sample_sent_[t.path], t.sent_ns);
    --unacked_pkts_;
  }
  // kLost: a spurious loss verdict; the queued retransmission is skipped.
  if (t.state == kLost) widen_reordering(now);
  t.state = kAcked;
  TxOp* op = t.op;
  --op->unacked;
  try_complete(op);
}

void Sender::on_ack(const AckHeader& a, uint64_t now) {
  bump(stats_.acks_received, 1);
  if (a.cum_ack > snd_nxt_ || (a.echo_path >= paths_.size())) {
    drops_.add(kDropMalformed);
    return;
  }
  hold_.on_peer_refusals(a.rejects);
  note_if_spurious(a.echo_seq, now);
  std::fill(acked_scratch_.begin(), acked_scratch_.end(), 0);
  std::fill(sample_sent_.begin(), sample_sent_.end(), 0);
  uint64_t newest_sent = 0;
  uint64_t before = unacked_pkts_;
  uint64_t una_before = snd_una_;
  for (uint64_t s = snd_una_; s < a.cum_ack; ++s) ack_pkt(s, now, &newest_sent);
  // Only what the last ack did not already report: behind a hole the same
  // thousands of bits arrive again on every ack.
  const bool newer = a.cum_ack >= last_sack_cum_;
  for (size_t w = 0; w < kSackWords; ++w) {
    uint64_t bits = a.sack[w];
    if (newer && bits) bits &= ~bits_from(last_sack_, a.cum_ack - last_sack_cum_ + 64 * w);
    while (bits) {
      int i = __builtin_ctzll(bits);
      bits &= bits - 1;
      ack_pkt(a.cum_ack + w * 64 + uint64_t(i), now, &newest_sent);
    }
  }
  if (newer) {
    std::copy(std::begin(a.sack), std::end(a.sack), last_sack_.begin());
    last_sack_cum_ = a.cum_ack;
  }
  ack_pkt(a.echo_seq, now, &newest_sent);
  while (snd_una_ < snd_nxt_ && pkt(snd_una_).state == kAcked) ++snd_una_;
  update_rtt(now);
  // Every path whose packets this ack covers gets a CC sample (its newest one),
  // not only the path the echo names: echoes alone leave most paths' delay stale.
  // The delay leaves out what is not the forward path's doing: the newest
  // arrival's wait for this ack (the others waited longer: a safe
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
  if (hold_.held) recheck_held();
}

// The flow's RTT (for the RTO) follows the newest first transmission an ack covered.
void Sender::update_rtt(uint64_t now) {
  const uint64_t newest_first = *std::max_element(sample_sent_.begin(), sample_sent_.end());
  if (!newest_first || newest_first > now) return;
  rtt_update(now - newest_first, &srtt_ns_, &rttvar_ns_);
}

// ---------------------------------------------------------------- loss detection

void Sender::mark_lost(TxPkt& t, bool timeout) {
  Path& path = paths_[t.path];
  path.inflight = std::max(0.0, path.inflight - double(t.len + sizeof(DataWire)));
  t.state = kLost;
  --unacked_pkts_;
  retx_.push_back(t.seq);
  bump(path.stats->losses, 1);
  if (timeout) bump(path.stats->timeouts, 1);
}

void Sender::note_if_spurious(uint64_t echo_seq, uint64_t now) {
  // The ack names its newest arrival. If that packet was retransmitted and an
  // earlier ack already covered it, the arrival was a duplicate: the original
  // was only late, and the retransmission spurious (a DSACK, in TCP's terms).
  if (echo_seq >= snd_nxt_) return;
  const TxPkt& t = pkt(echo_seq);
  if (t.seq == echo_seq && t.tx_count > 1 && (t.state == kAcked || echo_seq < snd_una_)) widen_reordering(now);
}

void Sender::widen_reordering(uint64_t now) {
  if (now - last_spurious_ns_ < srtt_ns_) return;  // once per round trip
  reo_shift_ = std::min(reo_shift_ + 1, kMaxReoShift);
  last_spurious_ns_ = now;
}

void Sender::detect_losses(uint64_t now) {
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
  // Records still in flight but not yet late move down to [0, keep); stale ones
  // (acked, or superseded by a retransmission) and the ones found lost are
  // dropped, from the middle too: behind a hole not yet judged lost, every
  // packet acked since would otherwise be walked again on every ack.
  size_t keep = 0, i = 0;
  for (; i < sendlog_.size(); ++i) {
    const SendRec r = sendlog_[i];
    if (!in_flight(r)) continue;
    if (r.sent_ns + path_reo >= rack_sent_ns_) break;  // nothing from here on is late by either rule
    TxPkt& t = pkt(r.seq);
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

uint64_t Sender::path_reorder_ns() const {
  return std::min(kMinReorderNs << reo_shift_, std::max(kMinReorderNs, uint64_t(p_.rto_ms * 1e6) / 4));
}

uint64_t Sender::path_timeout_ns(const Path& path) const {
  if (!path.srtt_ns) return ~0ull;  // no sample yet: only the RTO covers it
  return path.srtt_ns + 4 * path.rttvar_ns + path_reorder_ns();
}

uint64_t Sender::soonest_path_timeout_ns() const {
  uint64_t soonest = ~0ull;
  for (const Path& path : paths_) soonest = std::min(soonest, path_timeout_ns(path));
  return soonest;
}

// ---------------------------------------------------------------- timers

uint64_t Sender::rto_ns() const {
  uint64_t base = std::max<uint64_t>(uint64_t(p_.rto_ms * 1e6), srtt_ns_ + 4 * rttvar_ns_);
  uint64_t cap = std::max<uint64_t>(kMaxRtoNs, 4 * uint64_t(p_.rto_ms * 1e6));
  return std::min(cap, base << std::min(backoff_, 20));
}

void Sender::probe_tail(uint64_t now) {
  // A flow's last packets have no later packet to expose their loss. At the
  // tail, a packet its own path should have delivered by now (its RTT, four
  // deviations and the reordering window) is resent once, as RACK-TLP does; its
  // ack then exposes every earlier loss to detect_losses. One probe per tail.
  if (tail_probed_ || !sendq_.empty() || !retx_.empty()) return;
  const uint64_t soonest = soonest_path_timeout_ns();
  if (soonest == ~0ull) return;
  for (size_t i = 0; i < sendlog_.size(); ++i) {
    const SendRec& r = sendlog_[i];
    if (r.sent_ns + soonest > now) break;  // this one and every later one are within every path's time
    if (!in_flight(r)) continue;
    TxPkt& t = pkt(r.seq);
    if (r.sent_ns + path_timeout_ns(paths_[t.path]) > now) continue;
    mark_lost(t, false);
    tail_probed_ = true;
    bump(stats_.tail_probes, 1);
    return;
  }
}

uint64_t Sender::next_deadline(uint64_t now) const {
  uint64_t rto = ~0ull, probe = ~0ull, pace = ~0ull;
  for (const SendRec& r : sendlog_) {
    if (in_flight(r)) {
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
      if (in_flight(r) && paths_[t.path].srtt_ns) probe = std::min(probe, r.sent_ns + path_timeout_ns(paths_[t.path]));
    }
  }
  // A paced path that sent becomes eligible again at its next slot.
  for (const Path& path : paths_)
    if (path.next_tx_ns > now) pace = std::min(pace, path.next_tx_ns);
  return std::min({rto, probe, pace});
}

bool Sender::on_timer(uint64_t now) {
  while (!sendlog_.empty() && !in_flight(sendlog_.front())) sendlog_.pop_front();
  if (sendlog_.empty()) return false;
  probe_tail(now);
  const uint64_t rto = rto_ns();
  if (sendlog_.front().sent_ns + rto > now) return false;
  // One timeout per (backed-off) RTO period: after a stall every old packet
  // would time out on successive turns, and max_retries "consecutive" timeouts
  // would pass within milliseconds.
  if (last_rto_ns_ && now - last_rto_ns_ < rto) return false;
  last_rto_ns_ = now;
  if (++consecutive_rtos_ > p_.max_retries) return true;
  bump(stats_.timeouts, 1);
  // Only the oldest packet is resent, as a probe: most timeouts on a loaded host
  // are spurious (an engine descheduled past the RTO). If the loss was real, the
  // probe's ack exposes every packet sent before it to detect_losses.
  TxPkt& t = pkt(sendlog_.front().seq);
  sendlog_.pop_front();
  const uint16_t path = t.path;
  mark_lost(t, true);
  timeout_probe_ = t.seq;
  // For the same reason the first timeout after progress leaves the window
  // alone; real loss still cuts windows through detect_losses.
  if (consecutive_rtos_ > 1) paths_[path].cc->on_timeout(now);
  ++backoff_;
  return false;
}

}  // namespace uccl::net
