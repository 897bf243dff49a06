// The engine: one thread per endpoint that owns the datapath and every flow.
// Each turn of its loop: take work handed over by application threads, receive
// and dispatch a batch of packets, send the acks owed, fire timers (RTO, tail
// probe), pump flows into one batched send, publish completions and ring the
// endpoint's doorbell. It spins briefly after activity, then blocks in epoll
// (datapath sockets + an eventfd that application threads write) until the
// flows' next deadline (timers, delayed acks, pacing slots).
#pragma once
#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "transport/net/datapath/datapath.h"
#include "transport/shm/doorbell.h"
#include "transport/net/drops.h"
#include "transport/net/flow/flow.h"

namespace uccl::net {

class Engine {
 public:
  Engine(std::unique_ptr<Datapath> dp, int rank, uint32_t nonce, Doorbell* bell, double linger_s);
  ~Engine();  // lingers briefly to re-ack retransmissions, then stops

  Datapath& datapath() { return *dp_; }
  uint32_t nonce() const { return nonce_; }
  // Flows may be added while the engine runs; the thread starts with the first.
  void add_flow(std::shared_ptr<Flow> flow);
  // Application threads call this after handing work to a flow.
  void kick();
  DropCounters& drops() { return drops_; }

 private:
  void run();
  void adopt_new_flows();
  void dispatch(const RxPacket& p, uint64_t now);
  void send_ack(Flow* f, uint64_t now);
  void sleep_until(uint64_t deadline_ns, uint64_t now);

  std::unique_ptr<Datapath> dp_;
  int rank_;
  uint32_t nonce_;
  Doorbell* bell_;
  uint64_t linger_ns_;
  int evfd_ = -1;
  std::thread thread_;
  std::atomic<bool> stop_{false}, sleeping_{false}, kicked_{false};
  std::mutex new_mu_;
  std::vector<std::shared_ptr<Flow>> new_flows_;
  std::atomic<bool> have_new_{false};
  // engine thread only
  std::vector<std::shared_ptr<Flow>> flows_;
  std::unordered_map<int, Flow*> by_rank_;
  Flow* last_flow_ = nullptr;  // the flow the last packet went to
  std::unordered_map<Flow*, uint64_t> newest_ack_ns_;  // the acker's clock on each flow's newest ack taken
  DropCounters drops_;
};

}  // namespace uccl::net
