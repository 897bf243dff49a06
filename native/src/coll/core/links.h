// Links: credit-based slot channels between every pair of ranks, built on the
// transport's write-with-immediate. A sender writes a chunk into the next free
// slot of the receiver's inbox; the receiver consumes slots in order and returns
// a credit. Every chunk and credit carries the collective's sequence number and
// signature, so ranks that disagree about a call find out at once and abort
// everyone with a readable reason instead of hanging or corrupting data.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "coll/core/call_info.h"
#include "transport/endpoint.h"

namespace uccl {

struct LinkConfig {
  int slots = 4;                     // per peer pair, per direction
  uint64_t slot_bytes = 512 << 10;  // the largest chunk
};

class Links {
 public:
  Links(Endpoint& ep, const LinkConfig& cfg);
  ~Links();

  // Bootstrap: this rank's inbox/mailbox keys, then everyone's.
  std::string local_keys() const;
  void connect(const std::vector<std::string>& all_keys);

  // Starts a collective: stamps chunks and credits with (seq, sig); `call`
  // names it in errors.
  void begin(uint32_t seq, uint16_t sig, const CallInfo& call);
  // Waits until every credit is back: all peers consumed what we sent. Rooted
  // calls need it (a rank that only sends learns of a disagreeing peer here);
  // symmetric ones do not: every rank's result depends on every other's data.
  void finish();
  // Before going away: waits (bounded, errors ignored) until peers have consumed
  // everything we sent, so a departing rank never strands data a peer still needs.
  void drain(double timeout_s);

  uint64_t slot_bytes() const { return cfg_.slot_bytes; }
  // What a chunk carries: user data, or a window descriptor / "done" note (windows.h).
  // Receivers check the kind too, so a peer that took another path is caught.
  enum class Carries { Data, Window };
  // Sends `bytes` (<= slot_bytes) from a registered local region.
  void send(int peer, uint64_t lkey, uint64_t loff, uint64_t bytes, Carries what = Carries::Data) {
    sent(post(peer, lkey, loff, bytes, what));
  }
  // The same in two halves: post() waits for a credit and starts the write;
  // sent() waits until it is done (the source may then be reused).
  Endpoint::Posted post(int peer, uint64_t lkey, uint64_t loff, uint64_t bytes, Carries what = Carries::Data);
  void sent(const Endpoint::Posted& posted);
  // Waits for the next chunk from `peer`, checks it is `bytes` long, carries `what`
  // and belongs to this collective; returns where it landed.
  char* recv(int peer, uint64_t bytes, Carries what = Carries::Data);
  // The inbox region (to forward a received chunk without copying it).
  uint64_t inbox_key() const { return inbox_key_; }
  uint64_t inbox_offset_of(const char* p) const { return uint64_t(p - inbox_); }
  // Returns the oldest consumed slot from `peer` to its sender.
  void release(int peer);

  // A sub-group's view (hierarchical algorithms, subgroup.h): while set, the peers that
  // post/recv/release name on the calling thread are positions in `members` (ranks of this
  // communicator). Empty: ranks. Returns the view it replaces. Per thread, so that two
  // threads of one call (a pipelined hierarchical algorithm's lanes) each keep their own.
  std::vector<int> set_view(std::vector<int> members);

  // Tells every rank why this collective cannot go on, then throws MismatchError.
  [[noreturn]] void abort(const std::string& why);
  bool broken() const {
    std::lock_guard<std::mutex> lock(mu_);
    return !broken_reason_.empty();
  }
  // Also ends every wait of the call's other threads, which then throw `why`.
  void mark_broken(const std::string& why) {
    std::lock_guard<std::mutex> lock(mu_);
    broken_reason_ = why;
  }
  std::string broken_reason() const {
    std::lock_guard<std::mutex> lock(mu_);
    return broken_reason_;
  }

 private:
  struct Peer {
    uint64_t inbox_key = 0, mailbox_key = 0;  // the peer's regions we write into
    int credits = 0;
    uint64_t sent = 0, received = 0, released = 0;
    std::vector<uint8_t> arrived;       // per slot: chunk present
    std::vector<uint32_t> arrived_imm;  // per slot: its immediate
    std::vector<uint64_t> arrived_len;
  };

  int rank_in_view(int peer) const;
  void pump(const Completion& c);
  // Waits until ready() (called with mu_ held) or the call fails.
  void wait(const std::function<bool()>& ready, int peer);
  [[noreturn]] void fail_from_peer(int aborted_by, int mismatch_peer);
  char* slot_ptr(int src, uint64_t slot) { return inbox_ + slot_offset(src, slot); }
  uint64_t slot_offset(int src, uint64_t slot) const {
    return (uint64_t(src) * uint64_t(cfg_.slots) + slot) * cfg_.slot_bytes;
  }

  Endpoint& ep_;
  LinkConfig cfg_;
  int rank_, world_;
  // world x slots x slot_bytes, written by peers: in the endpoint's shared arena
  // (peers on this host copy straight into it), else in inbox_private_.
  char* inbox_ = nullptr;
  uint64_t inbox_bytes_ = 0;
  bool inbox_shared_ = false;
  std::vector<char> inbox_private_;
  std::vector<char> mailbox_;  // world x kReasonBytes: why a peer aborted
  uint64_t inbox_key_ = 0, mailbox_key_ = 0, zero_key_ = 0;
  char zero_byte_ = 0;
  std::vector<Peer> peers_;
  uint32_t seq_ = 0;
  uint16_t sig_ = 0;
  CallInfo call_;
  int aborted_by_ = -1;    // a peer told us to stop
  int mismatch_peer_ = -1;  // we saw a peer in a different call
  std::string broken_reason_;
  // Guards the peers' slot and credit state and the failure state above: a pipelined
  // call runs two threads on disjoint peers, and either may pump completions for both.
  // Never held while calling into the endpoint (whose lock the pumping thread holds).
  mutable std::mutex mu_;
};

}  // namespace uccl
