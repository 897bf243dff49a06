#include "transport/net/net_channel.h"

#include "common/errors.h"
#include "transport/net/limits.h"

namespace uccl::net {

NetChannel::NetChannel(std::shared_ptr<Flow> flow, Engine* engine)
    : flow_(std::move(flow)), engine_(engine), peer_(flow_->params().peer_rank) {}

NetChannel::~NetChannel() { flow_->detach(); }

void NetChannel::post(std::unique_ptr<TxOp> op) {
  flow_->submit(std::move(op));
  engine_->kick();
}

bool NetChannel::write(uint64_t wr_id, const void* src, uint64_t len, uint64_t rkey, uint64_t roff, bool with_imm,
                       uint32_t imm, const WaitFn&) {
  auto op = write_op(wr_id, src, len, rkey, roff, with_imm, imm);
  writes_.fetch_add(1, std::memory_order_relaxed);
  bytes_written_.fetch_add(len, std::memory_order_relaxed);
  post(std::move(op));
  return false;  // completes when every packet is acknowledged (and not refused)
}

bool NetChannel::read(uint64_t wr_id, void* dst, uint64_t len, uint64_t rkey, uint64_t roff) {
  auto op = read_op(wr_id, dst, len, rkey, roff);
  reads_.fetch_add(1, std::memory_order_relaxed);
  bytes_read_.fetch_add(len, std::memory_order_relaxed);
  post(std::move(op));
  return false;
}

bool NetChannel::send(uint64_t wr_id, const void* data, uint64_t len, uint64_t tag, const WaitFn&) {
  if (len > kMaxNetMessage)
    raise(ErrorKind::Argument, "rank ", flow_->params().my_rank, ": send(tag=", tag, ") to rank ", peer_, ": message of ",
          len, " bytes exceeds the net channel's limit of ", kMaxNetMessage,
          " bytes (write large data into a registered region instead)");
  auto op = send_op(wr_id, data, len, tag);
  msgs_sent_.fetch_add(1, std::memory_order_relaxed);
  bytes_sent_.fetch_add(len, std::memory_order_relaxed);
  post(std::move(op));
  return false;
}

size_t NetChannel::poll(ChannelSink& sink) {
  size_t events = 0;
  for (int d = 0; d < kNumDrops; ++d) {
    if (d == kDropDuplicate || d == kDropStaleAck) continue;  // retransmission and reordering noise: per-peer stats only
    for (uint64_t n = flow_->drops().take_new(d) + engine_->drops().take_new(d); n; --n) sink.on_drop(drop_name(d));
  }
  flow_->take_output(&scratch_);
  for (auto& c : scratch_.completions) {
    sink.on_local_complete(std::move(c));
    ++events;
  }
  for (auto& e : scratch_.events) {
    if (e.is_message) {
      ++msgs_received_;
      bytes_received_ += e.len;
      sink.on_message(peer_, e.key_or_tag, e.len, 0, e.data.get(), e.len);
    } else {
      ++remote_writes_;
      sink.on_remote_write(peer_, e.key_or_tag, e.offset, e.len, e.imm);
    }
    ++events;
  }
  scratch_.completions.clear();
  scratch_.events.clear();
  return events;
}

bool NetChannel::peer_alive() {
  if (!flow_->probe_if_silent()) return false;
  engine_->kick();
  return true;
}

PeerCounters NetChannel::counters() const {
  PeerCounters c;
  c.writes = writes_.load();
  c.bytes_written = bytes_written_.load();
  c.reads = reads_.load();
  c.bytes_read = bytes_read_.load();
  c.msgs_sent = msgs_sent_.load();
  c.bytes_sent = bytes_sent_.load();
  c.msgs_received = msgs_received_;
  c.bytes_received = bytes_received_;
  c.remote_writes = remote_writes_;
  Flow& f = *flow_;
  FlowStats& s = f.stats();
  c.net.present = true;
  c.net.packets_sent = s.packets_sent.load();
  c.net.payload_bytes_sent = s.bytes_sent.load();
  c.net.packets_received = s.packets_received.load();
  c.net.payload_bytes_received = s.bytes_received.load();
  c.net.retransmits = s.retransmits.load();
  c.net.timeouts = s.timeouts.load();
  c.net.tail_probes = s.tail_probes.load();
  c.net.acks_sent = s.acks_sent.load();
  c.net.acks_received = s.acks_received.load();
  c.net.srtt_us = double(s.srtt_ns.load()) / 1e3;
  c.net.rto_us = double(s.rto_ns.load()) / 1e3;
  for (int d = 0; d < kNumDrops; ++d) {
    uint64_t n = f.drops().total[size_t(d)].load();
    if (n) c.net.drops[drop_name(d)] = n;
  }
  for (auto& ps : f.path_stats()) {
    PathCounters p;
    p.packets_sent = ps.packets.load();
    p.bytes_sent = ps.bytes.load();
    p.retransmits = ps.retransmits.load();
    p.losses = ps.losses.load();
    p.timeouts = ps.timeouts.load();
    p.srtt_us = double(ps.srtt_ns.load()) / 1e3;
    p.cwnd_bytes = double(ps.cwnd.load());
    p.pacing_rate_bps = double(ps.rate_bps.load());
    p.inflight_bytes = double(ps.inflight.load());
    c.net.paths.push_back(p);
  }
  return c;
}

}  // namespace uccl::net
