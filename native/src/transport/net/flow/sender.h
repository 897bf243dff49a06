// The sending half of a flow. Operations (TxOp) are cut into packets with
// per-flow sequence numbers and sprayed over the flow's paths within each path's
// congestion window (trains of up to kMaxBurst packets, one GSO send each), and
// kept until acknowledged. Acks (cumulative + SACK bitmap + the newest arrival)
// release packets and give RTT samples (first transmissions only: Karn).
// Packets are declared lost RACK-style (time-based, per path first), at a
// flow's tail by one probe, and by the retransmission timer (RTO with backoff,
// one per RTO period); max_retries consecutive timeouts give the peer up.
// An operation completes when all its packets are acked (read requests: and
// their response has arrived; writes: and no refusal may still be on its way).
// Engine thread only. docs/net-flow.md has the state machines and their reasons.
#pragma once
#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "transport/completion.h"
#include "transport/net/datapath/datapath.h"
#include "transport/net/drops.h"
#include "transport/net/flow/params.h"
#include "transport/net/flow/refusal.h"
#include "transport/net/flow/stats.h"
#include "transport/net/flow/tx_op.h"
#include "transport/net/packet.h"
#include "transport/net/path.h"
#include "transport/net/reverse_delay.h"

namespace uccl::net {

// One engine turn's packets, handed to the datapath in one send.
struct TxBatch {
  static constexpr size_t kCap = 256;
  TxPacket pkts[kCap];
  DataWire hdrs[kCap];
  size_t n = 0;
};

class Sender {
 public:
  // `tx_common`: the header every packet to the peer starts with; finished
  // operations' completions are appended to `completions`.
  Sender(const FlowParams& p, const CommonHeader& tx_common, FlowStats& stats, DropCounters& drops,
         std::vector<Completion>& completions);

  // Takes an operation (msg id assigned in order) to send.
  void enqueue(std::unique_ptr<TxOp> op);
  bool idle() const { return unacked_pkts_ == 0 && sendq_.empty(); }  // nothing in flight or waiting
  // Adds packets (retransmissions first) while a path has room, up to the batch's capacity.
  void pump(uint64_t now, TxBatch* b);
  void on_ack(const AckHeader& a, uint64_t now);
  // Packets of the peer's answers to our operations.
  void on_read_response(uint64_t req_msg_id, uint64_t total, uint64_t frag_off, const char* payload, uint32_t len);
  void on_refusal(uint64_t refused_msg_id, uint64_t code, uint64_t region_len);
  // Tail probe and retransmission timeout; true when the peer must be given up.
  bool on_timer(uint64_t now);
  // The earliest of the RTO, the tail probe and a paced path's next slot (~0: none).
  uint64_t next_deadline(uint64_t now) const;
  // Fails every pending operation with `cause` and forgets all packets.
  void fail_all(ErrorKind kind, const std::string& cause);
  void set_closing() { closing_ = true; }
  void publish_stats();
  std::vector<PathStats>& path_stats() { return path_stats_; }

 private:
  enum PktState : uint8_t { kFree, kInFlight, kLost, kAcked };
  struct TxPkt {
    uint64_t seq = ~0ull;
    TxOp* op = nullptr;
    uint64_t off = 0;
    uint32_t len = 0;
    uint16_t path = 0;
    PktState state = kFree;
    uint32_t tx_count = 0;
    uint64_t sent_ns = 0;
  };
  struct SendRec {  // one transmission; stale once its packet is acked or sent again
    uint64_t seq;
    uint32_t tx_count;
    uint64_t sent_ns;
  };

  TxPkt& pkt(uint64_t seq) { return ring_[seq % kWindow]; }
  bool in_flight(const SendRec& r) const {
    const TxPkt& t = ring_[r.seq % kWindow];
    return t.seq == r.seq && t.state == kInFlight && t.tx_count == r.tx_count;
  }
  void emit(TxPkt& t, int path, uint64_t now, TxBatch* b);
  void ack_pkt(uint64_t seq, uint64_t now, uint64_t* newest_sent);
  void update_rtt(uint64_t now);
  void mark_lost(TxPkt& t, bool timeout);
  void note_if_spurious(uint64_t echo_seq, uint64_t now);
  void widen_reordering(uint64_t now);
  void detect_losses(uint64_t now);
  void probe_tail(uint64_t now);
  void try_complete(TxOp* op);
  void finish(TxOp* op);
  void recheck_held();
  uint64_t rto_ns() const;
  uint64_t path_reorder_ns() const;  // RACK's window within a path (widened after spurious losses)
  uint64_t path_timeout_ns(const Path& path) const;  // ~0 before the path's first RTT sample
  uint64_t soonest_path_timeout_ns() const;

  const FlowParams p_;
  const CommonHeader tx_common_;
  const uint32_t chunk_;  // payload bytes per full packet
  FlowStats& stats_;
  DropCounters& drops_;
  std::vector<Completion>& completions_;
  bool closing_ = false;

  // operations
  std::unordered_map<uint64_t, std::unique_ptr<TxOp>> ops_;  // by msg id, until completed
  std::deque<TxOp*> sendq_;  // ops with bytes not yet sent once
  uint64_t queued_bytes_ = 0;  // payload in sendq_ not yet cut into packets
  uint64_t next_msg_ = 0;
  WriteHold hold_;

  // packets
  std::vector<TxPkt> ring_;  // by seq % kWindow, for [snd_una_, snd_nxt_)
  uint64_t snd_una_ = 0, snd_nxt_ = 0;
  uint64_t unacked_pkts_ = 0;  // in flight (lost ones leave until resent)
  std::deque<uint64_t> retx_;  // lost packets to resend, oldest first
  std::deque<SendRec> sendlog_;  // transmissions in time order (loss detection, RTO)

  // paths
  std::vector<Path> paths_;
  std::vector<PathStats> path_stats_;
  PathPicker picker_;

  // acks and loss detection
  std::array<uint64_t, kSackWords> last_sack_{};  // the newest ack's SACK bits (on_ack)
  uint64_t last_sack_cum_ = 0;  // ... and the cumulative ack they start at
  std::vector<uint64_t> acked_scratch_;  // per path: wire bytes this ack released
  std::vector<uint64_t> sample_sent_;  // per path: newest first transmission this ack covers
  std::vector<uint8_t> cut_scratch_;  // per path: cut once per ack (detect_losses)
  uint64_t rack_sent_ns_ = 0;  // send time of the most recently sent packet known delivered
  std::vector<uint64_t> path_rack_ns_;  // the same per path, first transmissions only
  int reo_shift_ = 0;          // reordering windows scale by 1 << reo_shift_
  uint64_t last_spurious_ns_ = 0;
  ReverseDelay reverse_;  // the acks' queueing on the way back, taken out of the CC's delay

  // timers
  uint64_t srtt_ns_ = 0, rttvar_ns_ = 0;  // the flow's, for the RTO
  int backoff_ = 0, consecutive_rtos_ = 0;
  uint64_t last_rto_ns_ = 0;  // when the retransmission timer last fired (0: not since progress)
  bool tail_probed_ = false;  // a tail probe is out (since the last progress)
  uint64_t timeout_probe_ = ~0ull;  // the packet a timeout marked lost: it leaves whatever the window
};

}  // namespace uccl::net
