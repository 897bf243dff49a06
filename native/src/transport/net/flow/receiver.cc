#include "transport/net/flow/receiver.h"

#include <algorithm>
#include <cstring>
#include <new>

#include "transport/net/limits.h"

#include "common/stream_copy.h"
#include "transport/net/flow/read_protocol.h"
#include "transport/net/flow/refusal.h"

namespace uccl::net {

namespace {
// Delayed acks (docs/net-flow.md): one ack per kAckEvery packets, or kAckDelayNs
// after the oldest unacknowledged one; a lone packet waits up to 1.5x the recent
// gap between arrivals (within [kAckDelayNs, kMaxLoneAckDelayNs]) for a partner.
constexpr uint32_t kAckEvery = 128;
constexpr uint64_t kAckDelayNs = 30'000;
constexpr uint64_t kMaxLoneAckDelayNs = 1'000'000;
}  // namespace

Receiver::Receiver(const CommonHeader& tx_common, const PeerAddress& peer, const RegionTable* own_table,
                   FlowStats& stats, DropCounters& drops, std::vector<RxEvent>& events)
    : tx_common_(tx_common),
      peer_(peer),
      table_(own_table),
      stats_(stats),
      drops_(drops),
      events_(events),
      rcv_bits_(kSackWords, 0),
      reply_ip_(peer.ipv4),
      reply_port_(peer.ports[0]) {}

bool Receiver::from_peer(const RxPacket& from) const {
  if (from.src_ipv4 != peer_.ipv4) return false;
  return std::find(peer_.ports, peer_.ports + peer_.num_queues, from.src_port) != peer_.ports + peer_.num_queues;
}

void Receiver::note_arrival_gap(uint64_t now, uint64_t last_heard_ns) {
  if (last_heard_ns && now > last_heard_ns) {
    // An idle spell between operations says nothing about the arrival rate: capped.
    const int64_t gap = int64_t(std::min(now - last_heard_ns, kMaxLoneAckDelayNs)) - int64_t(rx_gap_ns_);
    rx_gap_ns_ = uint64_t(int64_t(rx_gap_ns_) + gap / 8);
  } else if (last_heard_ns) {
    rx_gap_ns_ -= rx_gap_ns_ / 8;  // same receive batch
  }
}

// The ack answers on the path the packet came in on, naming the newest arrival
// (the sender takes RTT from its own send times). A packet from anywhere but the
// peer's sockets (a replay by a third party) is acked to the peer all the same.
void Receiver::owe_ack(uint64_t seq, const DataHeader& h, const RxPacket& from, uint64_t now) {
  if (!need_ack_) first_unacked_ns_ = now;
  need_ack_ = true;
  ++unacked_rx_;
  echo_seq_ = seq;
  echo_path_ = h.path;
  echo_arrival_ns_ = now;
  if (from_peer(from)) {
    reply_queue_ = from.queue;
    reply_ip_ = from.src_ipv4;
    reply_port_ = from.src_port;
  }
}

Receiver::Arrival Receiver::accept(const DataHeader& h, uint32_t len, const RxPacket& from, uint64_t now,
                                   uint64_t last_heard_ns) {
  note_arrival_gap(now, last_heard_ns);
  const uint64_t seq = widen32(h.seq32, rcv_cum_);
  if (seq < rcv_cum_ || (seq < rcv_cum_ + kWindow && has(seq))) {
    drops_.add(kDropDuplicate);
    owe_ack(seq, h, from, now);  // the ack that covered it may have been lost
    ack_now_ = true;
    return {};
  }
  if (closing_) {
    drops_.add(kDropClosing);
    return {};
  }
  if (seq >= rcv_cum_ + kWindow) {
    drops_.add(kDropOutOfWindow);
    return {};
  }
  if (h.path >= 256) {
    drops_.add(kDropMalformed);
    return {};
  }
  bump(stats_.packets_received, 1);
  bump(stats_.bytes_received, len);
  // From here on the sequence number counts as received, whatever becomes of the payload.
  rcv_bits_[(seq % kWindow) / 64] |= 1ull << (seq % 64);
  while (has(rcv_cum_)) {
    rcv_bits_[(rcv_cum_ % kWindow) / 64] &= ~(1ull << (rcv_cum_ % 64));
    ++rcv_cum_;
  }
  owe_ack(seq, h, from, now);
  if (seq > rcv_next_high_) new_gap_ = true;  // something sent before it is missing
  rcv_next_high_ = std::max(rcv_next_high_, seq + 1);
  const uint64_t msg_id = widen32(h.msg32, rcv_next_msg_);
  if (msg_id < rcv_next_msg_) {
    drops_.add(kDropMalformed);  // belongs to an operation already complete
    return {};
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
    return {};
  }
  return {&op, msg_id};
}

void Receiver::refuse(RxOp& op, uint64_t msg_id, uint64_t code, uint64_t region_len, Replies* replies) {
  if (op.rejected) return;
  op.rejected = true;
  ++refusals_sent_;
  bump(stats_.refused, 1);
  replies->push_back(refusal(msg_id, code, region_len));
}

void Receiver::place(const DataHeader& h, const Arrival& in, const char* payload, uint32_t len, Replies* replies) {
  RxOp& op = *in.op;
  switch (op.kind) {
    case kOpWrite: {
      if (op.rejected) {
        drops_.add(kDropOutOfBounds);
        return;
      }
      const auto r = table_->lookup(op.a);
      if (const uint64_t code = check_access(r, kRemoteWrite, op.b, op.total)) {
        drops_.add(kDropOutOfBounds);
        refuse(op, in.msg_id, code, r ? r->len : 0, replies);
        return;
      }
      char* dst = reinterpret_cast<char*>(r->addr + op.b + h.frag_off);
      // A large write is not read again before the application looks at it:
      // streaming stores skip reading each destination line first. The engine
      // fences after each receive batch, before acks or completions leave.
      if (op.total >= kStreamOutputMin)
        stream_store(dst, payload, len);
      else if (len)
        std::memcpy(dst, payload, len);
      return;
    }
    case kOpSend:
      if (op.rejected) {
        drops_.add(kDropMalformed);
        return;
      }
      if (!op.data && op.total) {
        // The total is the peer's word: bounded, and an allocation that fails refuses the message.
        if (op.total <= kMaxNetMessage) op.data.reset(new (std::nothrow) char[op.total]);
        if (!op.data) {
          drops_.add(kDropMalformed);
          refuse(op, in.msg_id, kErrTooLarge, kMaxNetMessage, replies);
          return;
        }
      }
      if (len) std::memcpy(op.data.get() + h.frag_off, payload, len);
      return;
    default:  // read requests and probes carry no payload; served in order
      return;
  }
}

void Receiver::account(RxOp& op, uint32_t len, Replies* replies) {
  op.received += len;
  if (op.complete()) {
    ack_now_ = true;  // the sender completes the operation on this ack
    deliver_in_order(replies);  // only a completed operation can release events
  }
}

void Receiver::deliver_in_order(Replies* replies) {
  for (auto it = rx_ops_.find(rcv_next_msg_); it != rx_ops_.end() && it->second.complete();
       it = rx_ops_.find(rcv_next_msg_)) {
    RxOp& op = it->second;
    if (op.kind == kOpWrite && !op.rejected && (op.flags & kFlagImm)) {
      RxEvent e;
      e.key_or_tag = op.a;
      e.offset = op.b;
      e.len = op.total;
      e.imm = op.imm;
      events_.push_back(std::move(e));
    } else if (op.kind == kOpSend && !op.rejected) {
      RxEvent e;
      e.is_message = true;
      e.key_or_tag = op.a;
      e.len = op.total;
      e.data = std::move(op.data);
      events_.push_back(std::move(e));
    } else if (op.kind == kOpReadReq) {
      auto answer = serve_read(*table_, op.a, op.b, op.c, it->first);
      if (answer->kind == kOpError) {  // a refused read: counted like a refused write
        ++refusals_sent_;
        bump(stats_.refused, 1);
      }
      replies->push_back(std::move(answer));
    }
    if (last_rx_op_ == &it->second) last_rx_op_ = nullptr;
    rx_ops_.erase(it);
    ++rcv_next_msg_;
  }
}

uint64_t Receiver::ack_due_ns() const {
  if (ack_now_ || unacked_rx_ >= kAckEvery || (new_gap_ && unacked_rx_ >= 2)) return 0;
  if (unacked_rx_ >= 2) return first_unacked_ns_ + kAckDelayNs;
  // A lone packet waits for a partner about as long as packets have been arriving apart.
  const uint64_t lone = std::clamp<uint64_t>(rx_gap_ns_ * 3 / 2, kAckDelayNs, kMaxLoneAckDelayNs);
  return first_unacked_ns_ + lone;
}

bool Receiver::take_ack(AckHeader* a, int* queue, uint32_t* ip, uint16_t* port, uint64_t now) {
  if (!need_ack_ || now < ack_due_ns()) return false;  // delayed
  need_ack_ = false;
  ack_now_ = false;
  new_gap_ = false;
  unacked_rx_ = 0;
  a->common = tx_common_;
  a->common.type = kAck;
  a->cum_ack = rcv_cum_;
  a->echo_seq = echo_seq_;
  a->rejects = refusals_sent_;
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
