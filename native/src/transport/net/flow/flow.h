// A flow: the reliable connection to one peer, carried over N paths.
//
// Sender: application operations (writes, sends, read requests) are cut into
// packets with per-flow sequence numbers, sprayed over the paths (PathPicker)
// within each path's congestion window (in trains of up to kMaxBurst packets,
// one GSO send each), and kept until acknowledged. Acks carry a cumulative ack,
// a SACK bitmap over the receive window, the newest arrival, how long it waited
// for the ack and the acker's clock; RTT samples come from the sender's own send
// times of first transmissions (Karn), and congestion control sees them less the
// ack's wait and its queueing on the way back (reverse_delay.h). Holes are
// retransmitted when a packet sent later has been acknowledged (time-based,
// RACK-like), at a flow's tail when a packet outlives its own path's RTT (one
// probe), and on timeout (RTO with backoff, at most one per RTO period); after
// max_retries consecutive timeouts the flow fails every pending operation.
//
// Receiver: duplicates are suppressed by sequence number; write payload is
// placed straight into the registered region (checked against the region
// table); events (write-with-immediate, messages) are released in operation
// order.
//
// Threads: everything but the "app side" methods runs on the engine thread.
#pragma once
#include <array>
#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "transport/completion.h"
#include "transport/net/datapath/datapath.h"
#include "transport/net/drops.h"
#include "transport/net/packet.h"
#include "transport/net/path.h"
#include "transport/net/reverse_delay.h"
#include "transport/net/timing_wheel.h"
#include "transport/region_table.h"

namespace uccl::net {

struct FlowParams {
  int my_rank = 0, peer_rank = 0;
  uint32_t my_nonce = 0, peer_nonce = 0;
  uint64_t secret = 0;
  PeerAddress peer_addr;
  int num_paths = 16;
  std::string cc = "swift";
  uint32_t mtu = 1472;  // wire bytes per packet (uccl header included)
  double rto_ms = 5.0;
  int max_retries = 50;
  uint64_t swift_target_ns = 1'500'000;
};

struct TxOp {
  OpKind kind = kOpNop;
  Opcode opcode = Opcode::Write;
  bool internal = false;  // protocol traffic (read responses, errors, probes): no completion
  uint64_t wr_id = 0;
  const char* src = nullptr;
  uint64_t len = 0;  // payload bytes
  uint64_t a = 0, b = 0, c = 0;
  uint32_t imm = 0;
  uint8_t flags = 0;
  // read requests: where the response lands
  char* read_dst = nullptr;
  uint64_t read_got = 0;
  bool read_done = false;
  // sender progress
  uint64_t msg_id = 0;
  uint64_t next_off = 0;
  bool all_sent = false;
  uint32_t unacked = 0;
  bool failed = false;
  ErrorKind error_kind = ErrorKind::Generic;
  std::string error;
};

struct RxEvent {
  bool is_message = false;
  uint64_t key_or_tag = 0, offset = 0, len = 0;
  uint32_t imm = 0;
  std::unique_ptr<char[]> data;  // the whole message
};

struct FlowStats {
  std::atomic<uint64_t> packets_sent{0}, bytes_sent{0}, packets_received{0}, bytes_received{0};
  std::atomic<uint64_t> retransmits{0}, timeouts{0}, tail_probes{0}, acks_sent{0}, acks_received{0};
  std::atomic<uint64_t> srtt_ns{0}, rto_ns{0};
  std::atomic<uint64_t> refused{0};  // operations of the peer's this side refused (bounds, keys, access)
};

class Flow {
 public:
  Flow(const FlowParams& p, RegionTable* own_table, TimingWheel* wheel, uint32_t wheel_base);
  ~Flow();

  // ---- app side (any thread) ----
  void submit(std::unique_ptr<TxOp> op);
  // Ask the engine to probe the peer if it has been silent; returns false once the flow failed.
  bool probe_if_silent();
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  struct Output {
    std::vector<Completion> completions;
    std::vector<RxEvent> events;
  };
  void take_output(Output* out);
  void detach() { detached_.store(true); }
  const FlowParams& params() const { return p_; }
  uint32_t rx_auth() const { return uint32_t(rx_auth_); }  // the tag the peer's packets carry
  FlowStats& stats() { return stats_; }
  std::vector<PathStats>& path_stats() { return path_stats_; }
  DropCounters& drops() { return drops_; }

  // ---- engine side ----
  struct TxBatch {
    static constexpr size_t kCap = 256;
    TxPacket pkts[kCap];
    DataWire hdrs[kCap];
    size_t n = 0;
  };
  void take_submissions(uint64_t now);
  void on_data(const DataHeader& h, const char* payload, uint32_t len, const RxPacket& from, uint64_t now);
  void on_ack(const AckHeader& a, uint64_t now);
  // Fills an ack if one is owed and due now (acks of in-order arrivals are delayed a little).
  bool take_ack(AckHeader* a, int* queue, uint32_t* ip, uint16_t* port, uint64_t now);
  void pump(uint64_t now, TxBatch* batch);
  void on_timer(uint64_t now);
  uint64_t next_deadline() const;  // ~0 when no timer (RTO, delayed ack) is armed
  bool publish();                  // hands staged output to the app side; true if any
  bool has_tx_work() const;
  uint64_t ack_due_ns() const;  // when the owed ack must go (need_ack_ only)
  bool quiescent() const { return unacked_pkts_ == 0 && sendq_.empty() && retx_.empty(); }
  void set_closing() { closing_ = true; }
  uint64_t last_rx_ns() const { return last_rx_ns_; }
  void publish_stats();

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
  struct SendRec {
    uint64_t seq;
    uint32_t tx_count;
    uint64_t sent_ns;
  };
  struct RxOp {
    bool seen = false;
    uint8_t kind = 0, flags = 0;
    uint64_t total = 0, received = 0, a = 0, b = 0, c = 0;
    uint32_t imm = 0;
    bool rejected = false;
    // Messages are reassembled here; left uninitialised so its pages are faulted in
    // packet by packet, not zeroed all at once on the engine thread.
    std::unique_ptr<char[]> data;
    bool complete() const { return seen && received == total; }
  };

  TxPkt& pkt(uint64_t seq) { return ring_[seq % kWindow]; }
  void enqueue(std::unique_ptr<TxOp> op);
  void emit(TxPkt& t, int path, uint64_t now, TxBatch* b);
  void ack_pkt(uint64_t seq, std::vector<uint64_t>* acked_by_path, uint64_t* newest_sent);
  void mark_lost(TxPkt& t, bool timeout);
  void note_if_spurious(uint64_t echo_seq, uint64_t now);
  void widen_reordering(uint64_t now);
  void detect_losses(uint64_t now);
  void try_complete(TxOp* op);
  void finish(TxOp* op);
  void recheck_held();
  void fail_all(ErrorKind kind, const std::string& cause);
  std::string op_name(const TxOp& op) const;
  uint64_t rto_ns() const;
  uint64_t path_reorder_ns() const;  // RACK's window within a path (widened after spurious losses)
  uint64_t path_timeout_ns(const Path& path) const;  // ~0 before the path's first RTT sample
  uint64_t soonest_path_timeout_ns() const;
  void probe_tail(uint64_t now);
  void refuse(RxOp& op, uint64_t msg_id, uint64_t code, uint64_t region_len);
  void place(const DataHeader& h, uint64_t msg_id, RxOp& op, const char* payload, uint32_t len);
  void deliver_in_order();
  void serve_read(const RxOp& op, uint64_t msg_id);
  bool rcv_has(uint64_t seq) const { return (rcv_bits_[(seq % kWindow) / 64] >> (seq % 64)) & 1u; }

  FlowParams p_;
  RegionTable* table_;
  TimingWheel* wheel_;
  uint32_t wheel_base_;
  uint32_t chunk_;  // payload bytes per full packet
  CommonHeader tx_common_{};
  uint64_t rx_auth_;

  // app -> engine
  std::mutex in_mu_;
  std::vector<std::unique_ptr<TxOp>> incoming_;
  std::atomic<bool> probe_wanted_{false};
  std::atomic<uint64_t> last_rx_atomic_{0};
  std::atomic<bool> failed_{false};
  std::atomic<bool> detached_{false};
  std::string fail_cause_;

  // engine -> app
  std::mutex out_mu_;
  Output out_, staged_;

  // sender
  std::vector<Path> paths_;
  std::vector<PathStats> path_stats_;
  PathPicker picker_;
  std::unordered_map<uint64_t, std::unique_ptr<TxOp>> ops_;
  std::deque<TxOp*> sendq_;  // ops with bytes not yet sent once
  std::vector<TxPkt> ring_;
  std::deque<uint64_t> retx_;
  std::deque<SendRec> sendlog_;  // transmissions in time order (loss detection, RTO)
  std::vector<uint8_t> cut_scratch_;  // per path: cut once per ack (detect_losses)
  std::array<uint64_t, kSackWords> last_sack_{};  // the newest ack's SACK bits (on_ack)
  uint64_t last_sack_cum_ = 0;  // ... and the cumulative ack they start at
  uint64_t queued_bytes_ = 0;  // payload in sendq_ not yet cut into packets
  uint64_t next_msg_ = 0, snd_una_ = 0, snd_nxt_ = 0;
  uint64_t unacked_pkts_ = 0;
  uint64_t rack_sent_ns_ = 0;  // send time of the most recently sent packet known delivered
  std::vector<uint64_t> path_rack_ns_;  // the same per path, first transmissions only
  int reo_shift_ = 0;          // reordering windows scale by 1 << reo_shift_
  uint64_t last_spurious_ns_ = 0;
  uint64_t srtt_ns_ = 0, rttvar_ns_ = 0;
  int backoff_ = 0, consecutive_rtos_ = 0;
  uint64_t last_rto_ns_ = 0;  // when the retransmission timer last fired (0: not since progress)
  bool tail_probed_ = false;  // a tail probe is out (since the last progress)
  uint64_t peer_rejects_ = 0, errors_received_ = 0;
  bool held_ = false;
  std::vector<uint64_t> acked_scratch_;
  std::vector<uint64_t> sample_sent_;  // per path: newest first transmission this ack covers
  ReverseDelay reverse_;  // the acks' queueing on the way back, taken out of the CC's delay

  // receiver
  uint64_t rcv_cum_ = 0;
  std::vector<uint64_t> rcv_bits_;
  std::map<uint64_t, RxOp> rx_ops_;
  RxOp* last_rx_op_ = nullptr;  // rx_ops_[last_rx_msg_] (map nodes stay put until erased)
  uint64_t last_rx_msg_ = 0;
  uint64_t rcv_next_msg_ = 0;
  uint64_t rejects_ = 0;
  bool need_ack_ = false;
  bool ack_now_ = false;           // owed at once, not delayed
  uint64_t rcv_next_high_ = 0;     // one past the highest sequence number received
  bool new_gap_ = false;           // an arrival skipped sequence numbers since the last ack
  uint64_t first_unacked_ns_ = 0;  // arrival of the oldest packet not yet acked
  uint32_t unacked_rx_ = 0;
  uint64_t rx_gap_ns_ = 0;  // smoothed time between data arrivals (1/8 EWMA; an ack in between shortens one)
  uint64_t echo_seq_ = 0;
  uint16_t echo_path_ = 0;
  uint64_t echo_arrival_ns_ = 0;
  int reply_queue_ = 0;
  uint32_t reply_ip_ = 0;
  uint16_t reply_port_ = 0;
  uint64_t last_rx_ns_ = 0;
  bool closing_ = false;

  FlowStats stats_;
  DropCounters drops_;
};

}  // namespace uccl::net
