// The Channel the endpoint sees for a peer reached over the network: hands
// operations to the peer's Flow (engine thread) and delivers what the engine
// has published (completions, remote writes, messages, drops) from poll().
#pragma once
#include <atomic>
#include <memory>

#include "transport/channel.h"
#include "transport/net/engine.h"
#include "transport/net/flow/flow.h"

namespace uccl::net {

class NetChannel final : public Channel {
 public:
  NetChannel(std::shared_ptr<Flow> flow, Engine* engine);
  ~NetChannel() override;

  const char* kind() const override { return "net"; }
  bool write(uint64_t wr_id, const void* src, uint64_t len, uint64_t rkey, uint64_t roff, bool with_imm,
             uint32_t imm, const WaitFn& wait) override;
  bool read(uint64_t wr_id, void* dst, uint64_t len, uint64_t rkey, uint64_t roff) override;
  bool send(uint64_t wr_id, const void* data, uint64_t len, uint64_t tag, const WaitFn& wait) override;
  size_t poll(ChannelSink& sink) override;
  bool peer_alive() override;
  // Relaxed: a caller that needs it current has just taken a later event of this flow.
  uint64_t refused() const override { return flow_->stats().refused.load(std::memory_order_relaxed); }
  PeerCounters counters() const override;

 private:
  void post(std::unique_ptr<TxOp> op);

  std::shared_ptr<Flow> flow_;
  Engine* engine_;
  int peer_;
  std::atomic<uint64_t> writes_{0}, bytes_written_{0}, reads_{0}, bytes_read_{0}, msgs_sent_{0}, bytes_sent_{0};
  uint64_t msgs_received_ = 0, bytes_received_ = 0, remote_writes_ = 0;  // under the endpoint lock
  Flow::Output scratch_;
};

}  // namespace uccl::net
