// A flow: the reliable connection to one peer, carried over N paths. It owns
// one Sender (our operations: packets, acks, loss recovery) and one Receiver
// (the peer's operations: placement, in-order delivery, acks owed), routes each
// arriving packet to them, and hands work between application threads and the
// engine thread: submitted operations in, completions and events out, and the
// flow's failure (the peer given up) to both.
//
// Threads: the "app side" methods run on any thread, the rest on the engine's.
#pragma once
#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "transport/completion.h"
#include "transport/net/drops.h"
#include "transport/net/flow/params.h"
#include "transport/net/flow/receiver.h"
#include "transport/net/flow/sender.h"
#include "transport/net/flow/stats.h"
#include "transport/net/flow/tx_op.h"
#include "transport/net/packet.h"
#include "transport/region_table.h"

namespace uccl::net {

class Flow {
 public:
  Flow(const FlowParams& p, const RegionTable* own_table);

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
  uint32_t rx_auth() const { return rx_auth_; }  // the tag the peer's packets carry
  FlowStats& stats() { return stats_; }
  std::vector<PathStats>& path_stats() { return sender_.path_stats(); }
  DropCounters& drops() { return drops_; }

  // ---- engine side ----
  void take_submissions(uint64_t now);
  void on_data(const DataHeader& h, const char* payload, uint32_t len, const RxPacket& from, uint64_t now);
  void on_ack(const AckHeader& a, uint64_t now);
  // Fills an ack if one is owed and due now (acks of in-order arrivals are delayed a little).
  bool take_ack(AckHeader* a, int* queue, uint32_t* ip, uint16_t* port, uint64_t now) {
    return receiver_.take_ack(a, queue, ip, port, now);
  }
  void pump(uint64_t now, TxBatch* batch) { sender_.pump(now, batch); }
  void on_timer(uint64_t now);
  // The next time a timer (RTO, tail probe, delayed ack, pacing slot) is due; ~0 when none.
  uint64_t next_deadline(uint64_t now) const {
    return std::min(receiver_.ack_deadline(), sender_.next_deadline(now));
  }
  bool publish();  // hands staged output to the app side; true if any
  // Everything posted has been acknowledged (or the peer has failed): closing loses nothing.
  bool drained() const { return failed() || sender_.idle(); }
  void set_closing() {
    sender_.set_closing();
    receiver_.set_closing();
  }
  void publish_stats() { sender_.publish_stats(); }

 private:
  void heard_from_peer(uint64_t now);
  void enqueue(std::unique_ptr<TxOp> op);
  void fail(ErrorKind kind, const std::string& cause);

  const FlowParams p_;
  const uint32_t rx_auth_;
  FlowStats stats_;
  DropCounters drops_;
  Output staged_;  // engine thread: output not yet published

  Sender sender_;
  Receiver receiver_;
  Replies replies_;  // what the receiver owes the peer, handed to the sender after each packet
  uint64_t last_rx_ns_;  // anything (data or ack) from the peer

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
  Output out_;
};

}  // namespace uccl::net
