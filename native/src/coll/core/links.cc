#include "coll/core/links.h"

#include <cstring>

#include "common/errors.h"

namespace uccl {

namespace {
constexpr uint32_t kData = 0, kCredit = 1, kAbort = 2, kWindow = 3;
constexpr uint64_t kReasonBytes = 512;

uint32_t make_imm(uint32_t kind, uint64_t slot, uint32_t seq, uint16_t sig) {
  return (kind << 30) | (uint32_t(slot & 63) << 24) | ((seq & 0xffu) << 16) | sig;
}
uint32_t imm_kind(uint32_t imm) { return imm >> 30; }
uint64_t imm_slot(uint32_t imm) { return (imm >> 24) & 63; }
uint32_t imm_seq(uint32_t imm) { return (imm >> 16) & 0xffu; }
uint16_t imm_sig(uint32_t imm) { return uint16_t(imm & 0xffffu); }

struct Keys {
  uint64_t inbox, mailbox;
};

// The calling thread's sub-group view, and whose it is.
struct View {
  const void* owner = nullptr;
  std::vector<int> members;
};
View& thread_view() {
  thread_local View view;
  return view;
}
}  // namespace

std::vector<int> Links::set_view(std::vector<int> members) {
  View& v = thread_view();
  std::vector<int> previous;
  if (v.owner == this) previous.swap(v.members);
  v.owner = this;
  v.members = std::move(members);
  return previous;
}

int Links::rank_in_view(int peer) const {
  const View& v = thread_view();
  return v.owner != this || v.members.empty() ? peer : v.members[size_t(peer)];
}

Links::Links(Endpoint& ep, const LinkConfig& cfg) : ep_(ep), cfg_(cfg), rank_(ep.rank()), world_(ep.world()) {
  if (cfg_.slots < 2 || cfg_.slots > 64) raise(ErrorKind::Argument, "links: slots must be in [2, 64]");
  if (cfg_.slot_bytes < 64) raise(ErrorKind::Argument, "links: slot_bytes must be >= 64");
  inbox_bytes_ = uint64_t(world_) * uint64_t(cfg_.slots) * cfg_.slot_bytes;
  inbox_ = static_cast<char*>(ep_.alloc_shared(inbox_bytes_));
  inbox_shared_ = inbox_ != nullptr;
  if (!inbox_shared_) {
    inbox_private_.resize(inbox_bytes_);
    inbox_ = inbox_private_.data();
  }
  mailbox_.resize(size_t(world_) * kReasonBytes);
  inbox_key_ = ep_.register_region(uint64_t(inbox_), inbox_bytes_, kRemoteWrite);
  mailbox_key_ = ep_.register_region(uint64_t(mailbox_.data()), mailbox_.size(), kRemoteWrite);
  zero_key_ = ep_.register_region(uint64_t(&zero_byte_), 1, 0);
  peers_.resize(size_t(world_));
  for (auto& p : peers_) {
    p.credits = cfg_.slots;
    p.arrived.assign(size_t(cfg_.slots), 0);
    p.arrived_imm.assign(size_t(cfg_.slots), 0);
    p.arrived_len.assign(size_t(cfg_.slots), 0);
  }
}

Links::~Links() {
  try {
    ep_.deregister_region(inbox_key_);
    ep_.deregister_region(mailbox_key_);
    ep_.deregister_region(zero_key_);
  } catch (...) {
  }
  if (inbox_shared_) ep_.free_shared(inbox_);
}

std::string Links::local_keys() const {
  Keys k{inbox_key_, mailbox_key_};
  return std::string(reinterpret_cast<const char*>(&k), sizeof(k));
}

void Links::connect(const std::vector<std::string>& all_keys) {
  if (int(all_keys.size()) != world_) raise(ErrorKind::Argument, "links: expected keys from ", world_, " ranks");
  for (int p = 0; p < world_; ++p) {
    Keys k;
    if (all_keys[size_t(p)].size() != sizeof(k))
      raise(ErrorKind::PeerFailure, "rank ", rank_, ": links: malformed keys from rank ", p);
    std::memcpy(&k, all_keys[size_t(p)].data(), sizeof(k));
    peers_[size_t(p)].inbox_key = k.inbox;
    peers_[size_t(p)].mailbox_key = k.mailbox;
  }
}

void Links::begin(uint32_t seq, uint16_t sig, const CallInfo& call) {
  if (broken()) raise(ErrorKind::Mismatch, broken_reason(), " (the communicator cannot be used after this)");
  seq_ = seq;
  sig_ = sig;
  call_ = call;
}

void Links::pump(const Completion& c) {
  std::lock_guard<std::mutex> lock(mu_);
  Peer& p = peers_[size_t(c.peer)];
  uint32_t imm = c.imm;
  switch (imm_kind(imm)) {
    case kData:
    case kWindow: {
      uint64_t slot = imm_slot(imm);
      p.arrived[slot] = 1;
      p.arrived_imm[slot] = imm;
      p.arrived_len[slot] = c.len;
      // Same collective index, different signature: that peer was called differently.
      if (imm_seq(imm) == (seq_ & 0xffu) && imm_sig(imm) != sig_ && mismatch_peer_ < 0) mismatch_peer_ = c.peer;
      break;
    }
    case kCredit:
      p.credits++;
      // Symmetric calls do not wait for their credits, so credits of earlier calls may
      // still be arriving. One stamped with this call's index but another signature
      // comes from a peer that consumed our data in a different call.
      if (imm_seq(imm) == (seq_ & 0xffu) && imm_sig(imm) != sig_ && mismatch_peer_ < 0) mismatch_peer_ = c.peer;
      break;
    case kAbort:
      if (aborted_by_ < 0) aborted_by_ = c.peer;
      break;
    default:
      break;
  }
}

void Links::fail_from_peer(int aborted_by, int mismatch_peer) {
  if (aborted_by < 0)
    abort(format_msg("rank ", mismatch_peer, " is in a different collective, or called this one with different ",
                     "arguments (sizes, dtype, op or root)"));
  const char* why = mailbox_.data() + uint64_t(aborted_by) * kReasonBytes;
  std::string reason = format_msg("rank ", rank_, ": ", call_.str(), ": aborted because ",
                                  std::string(why, strnlen(why, kReasonBytes)));
  mark_broken(reason);
  throw Error(ErrorKind::Mismatch, reason);
}

void Links::wait(const std::function<bool()>& ready, int peer) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (aborted_by_ < 0 && mismatch_peer_ < 0 && broken_reason_.empty() && ready()) return;
  }
  auto drain = [this](const Completion& c) { pump(c); };
  int aborted_by = -1, mismatch_peer = -1;
  std::string broken;
  auto done = [&] {
    ep_.drain_remote_writes(drain);
    std::lock_guard<std::mutex> lock(mu_);
    aborted_by = aborted_by_, mismatch_peer = mismatch_peer_, broken = broken_reason_;
    return aborted_by >= 0 || mismatch_peer >= 0 || !broken.empty() || ready();
  };
  if (!done()) {
    try {
      // The communicator adds which call this was to any error.
      ep_.wait_until(done, ep_.config().timeout_s, OpDesc{Opcode::Write, peer, 0, "collective", true});
    } catch (const Error& e) {
      mark_broken(e.what());
      throw;
    }
  }
  if (aborted_by >= 0 || mismatch_peer >= 0) fail_from_peer(aborted_by, mismatch_peer);
  if (!broken.empty()) throw Error(ErrorKind::Mismatch, broken);  // another thread of this call failed
}

Endpoint::Posted Links::post(int peer, uint64_t lkey, uint64_t loff, uint64_t bytes, Carries what) {
  peer = rank_in_view(peer);
  Peer& p = peers_[size_t(peer)];
  if (bytes > cfg_.slot_bytes) raise(ErrorKind::Argument, "links: chunk of ", bytes, " bytes exceeds a slot");
  wait([&] { return p.credits > 0; }, peer);
  uint64_t slot;
  {
    std::lock_guard<std::mutex> lock(mu_);
    slot = p.sent % uint64_t(cfg_.slots);
    p.credits--;
    p.sent++;
  }
  Endpoint::Posted posted;
  try {
    posted = ep_.write(peer, lkey, loff, bytes, p.inbox_key, slot_offset(rank_, slot), true,
                       make_imm(what == Carries::Data ? kData : kWindow, slot, seq_, sig_));
  } catch (const Error&) {
    // A peer that aborted may already have torn its inbox down: report why it stopped.
    ep_.drain_remote_writes([this](const Completion& c) { pump(c); });
    int aborted_by, mismatch_peer;
    {
      std::lock_guard<std::mutex> lock(mu_);
      aborted_by = aborted_by_, mismatch_peer = mismatch_peer_;
    }
    if (aborted_by >= 0 || mismatch_peer >= 0) fail_from_peer(aborted_by, mismatch_peer);
    throw;
  }
  return posted;
}

void Links::sent(const Endpoint::Posted& posted) {
  if (!posted.done) ep_.wait(posted.wr_id, ep_.config().timeout_s);
}

char* Links::recv(int peer, uint64_t bytes, Carries what) {
  peer = rank_in_view(peer);
  Peer& p = peers_[size_t(peer)];
  const uint64_t slot = p.received % uint64_t(cfg_.slots);  // only this thread moves p.received
  wait([&] { return p.arrived[slot] != 0; }, peer);
  uint32_t imm;
  uint64_t arrived_len;
  {
    std::lock_guard<std::mutex> lock(mu_);
    imm = p.arrived_imm[slot], arrived_len = p.arrived_len[slot];
  }
  if (imm_seq(imm) != (seq_ & 0xffu) || imm_sig(imm) != sig_)
    abort(format_msg("rank ", peer, " sent data for a different collective or different arguments ",
                     "(ranks must call the same collectives in the same order with matching sizes, dtypes, ops ",
                     "and roots)"));
  if (imm_kind(imm) != (what == Carries::Data ? kData : kWindow))
    abort(format_msg("rank ", peer, " sent ", imm_kind(imm) == kData ? "data" : "a window", " where rank ", rank_,
                     " expected ", what == Carries::Data ? "data" : "a window",
                     " (the ranks disagree about sizes, so they took different paths)"));
  if (arrived_len != bytes)
    abort(format_msg("rank ", peer, " sent a chunk of ", arrived_len, " bytes where rank ", rank_, " expected ",
                     bytes, " (sizes differ across ranks)"));
  {
    std::lock_guard<std::mutex> lock(mu_);
    p.arrived[slot] = 0;
    p.received++;
  }
  return slot_ptr(peer, slot);
}

void Links::release(int peer) {
  peer = rank_in_view(peer);
  Peer& p = peers_[size_t(peer)];
  uint64_t slot;
  {
    std::lock_guard<std::mutex> lock(mu_);
    slot = p.released % uint64_t(cfg_.slots);
    p.released++;
  }
  // Nobody waits for a credit: the peer's arrival is what counts. Detached, its
  // completion is not kept (a failure still surfaces in the next wait on that peer).
  auto posted = ep_.write(peer, zero_key_, 0, 0, p.inbox_key, 0, true, make_imm(kCredit, slot, seq_, sig_));
  if (!posted.done) ep_.detach(posted.wr_id);
}

void Links::drain(double timeout_s) {
  auto all_back = [&] {
    ep_.drain_remote_writes([this](const Completion& c) { pump(c); });
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& p : peers_)
      if (p.credits < cfg_.slots) return false;
    return true;
  };
  if (broken() || all_back()) return;
  try {
    ep_.wait_until(all_back, timeout_s, OpDesc{Opcode::Write, kAnySource, 0, "drain"});
  } catch (const Error&) {  // a dead or departed peer: nothing left to wait for
  }
}

void Links::finish() {
  for (int peer = 0; peer < world_; ++peer) {
    Peer& p = peers_[size_t(peer)];
    wait([&] { return p.credits == cfg_.slots; }, peer);
  }
}

void Links::abort(const std::string& why) {
  const std::string reason = format_msg("rank ", rank_, ": ", call_.str(), ": ", why);
  mark_broken(reason);
  std::string text = format_msg("rank ", rank_, " found: ", why);
  text.resize(kReasonBytes - 1);
  text.push_back('\0');
  uint64_t key = ep_.register_region(uint64_t(text.data()), text.size(), 0);
  std::vector<uint64_t> pending;
  for (int peer = 0; peer < world_; ++peer) {
    if (peer == rank_) continue;
    try {
      auto posted = ep_.write(peer, key, 0, text.size(), peers_[size_t(peer)].mailbox_key,
                              uint64_t(rank_) * kReasonBytes, true, make_imm(kAbort, 0, seq_, sig_));
      if (!posted.done) pending.push_back(posted.wr_id);
    } catch (const Error&) {  // a dead peer cannot be told; the others still are
    }
  }
  for (uint64_t id : pending) {  // `text` must outlive writes still in flight
    try {
      ep_.wait(id, 5.0);
    } catch (const Error&) {
    }
  }
  ep_.deregister_region(key);
  throw Error(ErrorKind::Mismatch, reason);
}

}  // namespace uccl
