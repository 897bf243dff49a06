// The receiving half of a flow. Duplicates are suppressed by sequence number
// (a bitmap over the receive window above the cumulative ack); the peer's write
// payload is placed straight into the registered region (checked against the
// region table, refused otherwise: refusal.h), messages are reassembled, and
// events (write-with-immediate, messages) and read requests are released in
// operation order. Acks are owed per arrival and delayed a little (see
// ack_due_ns). Packets that answer this side's own operations (read responses,
// error packets) are the sender's to place; the flow routes them.
// Engine thread only. docs/net-flow.md has the state machines and their reasons.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "transport/net/datapath/datapath.h"
#include "transport/net/drops.h"
#include "transport/net/flow/stats.h"
#include "transport/net/flow/tx_op.h"
#include "transport/net/packet.h"
#include "transport/region_table.h"

namespace uccl::net {

// What the peer did to this side, for the application: a write with immediate
// landed, or a message arrived.
struct RxEvent {
  bool is_message = false;
  uint64_t key_or_tag = 0, offset = 0, len = 0;
  uint32_t imm = 0;
  std::unique_ptr<char[]> data;  // the whole message
};

// Operations this side owes the peer in answer (read responses, refusals).
using Replies = std::vector<std::unique_ptr<TxOp>>;

// One of the peer's operations, as its packets arrive.
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

class Receiver {
 public:
  // `tx_common`: the header every ack starts with; `peer`: the peer's published sockets,
  // the only places acks go; released events are appended to `events`.
  Receiver(const CommonHeader& tx_common, const PeerAddress& peer, const RegionTable* own_table, FlowStats& stats,
           DropCounters& drops, std::vector<RxEvent>& events);

  struct Arrival {
    RxOp* op = nullptr;  // null: the packet was dropped (its ack is owed all the same)
    uint64_t msg_id = 0;
  };
  // Takes a data packet's sequence number (owing an ack) and finds its operation.
  // `last_heard_ns`: when anything (data or ack) last arrived from the peer.
  Arrival accept(const DataHeader& h, uint32_t len, const RxPacket& from, uint64_t now, uint64_t last_heard_ns);
  // Places the payload of the peer's write or message (other kinds carry none
  // or are the sender's); a refused write adds its refusal to `replies`.
  void place(const DataHeader& h, const Arrival& in, const char* payload, uint32_t len, Replies* replies);
  // Counts the packet's payload; a completed operation releases what is in order
  // (served read requests add their answer to `replies`).
  void account(RxOp& op, uint32_t len, Replies* replies);

  // Fills an ack if one is owed and due now; where it goes: *queue, *ip, *port.
  bool take_ack(AckHeader* a, int* queue, uint32_t* ip, uint16_t* port, uint64_t now);
  uint64_t ack_deadline() const { return need_ack_ ? ack_due_ns() : ~0ull; }  // ~0: none owed
  void set_closing() { closing_ = true; }

 private:
  bool has(uint64_t seq) const { return (rcv_bits_[(seq % kWindow) / 64] >> (seq % 64)) & 1u; }
  void note_arrival_gap(uint64_t now, uint64_t last_heard_ns);
  void owe_ack(uint64_t seq, const DataHeader& h, const RxPacket& from, uint64_t now);
  uint64_t ack_due_ns() const;  // when the owed ack must go
  void refuse(RxOp& op, uint64_t msg_id, uint64_t code, uint64_t region_len, Replies* replies);
  void deliver_in_order(Replies* replies);

  const CommonHeader tx_common_;
  const PeerAddress& peer_;
  bool from_peer(const RxPacket& from) const;
  const RegionTable* table_;
  FlowStats& stats_;
  DropCounters& drops_;
  std::vector<RxEvent>& events_;
  bool closing_ = false;

  // sequence numbers
  uint64_t rcv_cum_ = 0;           // every seq below has arrived
  std::vector<uint64_t> rcv_bits_;  // arrivals at or above rcv_cum_, by seq % kWindow
  uint64_t rcv_next_high_ = 0;     // one past the highest sequence number received

  // operations
  std::map<uint64_t, RxOp> rx_ops_;  // by msg id, until released in order
  RxOp* last_rx_op_ = nullptr;  // rx_ops_[last_rx_msg_] (map nodes stay put until erased)
  uint64_t last_rx_msg_ = 0;
  uint64_t rcv_next_msg_ = 0;  // the next operation to release
  // Error packets sent so far (refused writes and reads alike): acks carry it, and
  // the writer counts the error packets it received against it (WriteHold).
  uint64_t refusals_sent_ = 0;

  // the owed ack
  bool need_ack_ = false;
  bool ack_now_ = false;           // owed at once, not delayed
  bool new_gap_ = false;           // an arrival skipped sequence numbers since the last ack
  uint64_t first_unacked_ns_ = 0;  // arrival of the oldest packet not yet acked
  uint32_t unacked_rx_ = 0;
  uint64_t rx_gap_ns_ = 0;  // smoothed time between data arrivals (1/8 EWMA; an ack in between shortens one)
  uint64_t echo_seq_ = 0;   // the newest arrival, its path and arrival time
  uint16_t echo_path_ = 0;
  uint64_t echo_arrival_ns_ = 0;
  // Where the peer's newest arrival came from: the ack goes back there (the peer's
  // first socket until one of its packets has arrived).
  int reply_queue_ = 0;
  uint32_t reply_ip_ = 0;
  uint16_t reply_port_ = 0;
};

}  // namespace uccl::net
