#include "transport/net/flow/flow.h"

#include "common/clock.h"
#include "common/errors.h"

namespace uccl::net {

namespace {
constexpr uint64_t kProbeSilenceNs = 100'000'000;  // probe a peer silent this long

// The header every packet this side sends to the peer starts with.
CommonHeader tx_header(const FlowParams& p) {
  CommonHeader c{};
  c.magic = kMagic;
  c.version = kVersion;
  c.src_rank = uint16_t(p.my_rank);
  c.dst_rank = uint16_t(p.peer_rank);
  c.src_nonce = p.my_nonce;
  c.dst_nonce = p.peer_nonce;
  c.auth = conn_auth(p.secret, uint16_t(p.my_rank), uint16_t(p.peer_rank), p.my_nonce, p.peer_nonce);
  return c;
}
}  // namespace

Flow::Flow(const FlowParams& p, const RegionTable* own_table)
    : p_(p),
      rx_auth_(conn_auth(p.secret, uint16_t(p.peer_rank), uint16_t(p.my_rank), p.peer_nonce, p.my_nonce)),
      sender_(p, tx_header(p), stats_, drops_, staged_.completions),
      receiver_(tx_header(p), p_.peer_addr, own_table, stats_, drops_, staged_.events),
      last_rx_ns_(now_ns()) {
  last_rx_atomic_.store(last_rx_ns_);
}

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

// ---------------------------------------------------------------- engine side

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

void Flow::enqueue(std::unique_ptr<TxOp> op) {
  if (failed()) {
    if (!op->internal)
      staged_.completions.push_back(peer_failure(*op, ErrorKind::PeerFailure, p_.my_rank, p_.peer_rank, fail_cause_));
    return;
  }
  sender_.enqueue(std::move(op));
}

void Flow::take_submissions(uint64_t now) {
  std::vector<std::unique_ptr<TxOp>> in;
  {
    std::lock_guard<std::mutex> lock(in_mu_);
    in.swap(incoming_);
  }
  for (auto& op : in) enqueue(std::move(op));
  if (probe_wanted_.exchange(false, std::memory_order_relaxed) && sender_.idle() &&
      now - last_rx_ns_ > kProbeSilenceNs) {
    // A reliable no-op: if the peer is gone, its retransmissions run into the give-up.
    auto nop = std::make_unique<TxOp>();
    nop->kind = kOpNop;
    nop->internal = true;
    enqueue(std::move(nop));
  }
}

void Flow::heard_from_peer(uint64_t now) {
  last_rx_ns_ = now;
  last_rx_atomic_.store(now, std::memory_order_relaxed);
}

void Flow::on_ack(const AckHeader& a, uint64_t now) {
  heard_from_peer(now);
  sender_.on_ack(a, now);
}

void Flow::on_data(const DataHeader& h, const char* payload, uint32_t len, const RxPacket& from, uint64_t now) {
  const uint64_t last_heard = last_rx_ns_;
  heard_from_peer(now);
  const Receiver::Arrival in = receiver_.accept(h, len, from, now, last_heard);
  if (!in.op) return;
  RxOp& op = *in.op;
  // Answers to our own operations are the sender's; the rest is the peer's.
  if (op.kind == kOpReadResp)
    sender_.on_read_response(op.a, op.total, h.frag_off, payload, len);
  else if (op.kind == kOpError)
    sender_.on_refusal(op.a, op.b, op.c);
  else
    receiver_.place(h, in, payload, len, &replies_);
  receiver_.account(op, len, &replies_);
  if (!replies_.empty()) {
    for (auto& r : replies_) enqueue(std::move(r));
    replies_.clear();
  }
}

void Flow::on_timer(uint64_t now) {
  if (failed()) return;
  if (sender_.on_timer(now))
    fail(ErrorKind::PeerFailure,
         format_msg("rank ", p_.peer_rank, " stopped acknowledging (", p_.max_retries,
                    " consecutive retransmission timeouts); it is dead or unreachable"));
}

void Flow::fail(ErrorKind kind, const std::string& cause) {
  fail_cause_ = cause;
  failed_.store(true, std::memory_order_release);
  sender_.fail_all(kind, cause);
}

}  // namespace uccl::net
