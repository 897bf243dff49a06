#include "python/stats.h"

#include <pybind11/stl.h>  // drop counters: std::map -> dict

namespace py = pybind11;

namespace uccl::python {

py::dict stats_to_dict(const Endpoint::Stats& s) {
  py::list peers;
  for (const auto& c : s.peers) {
    py::dict d;
    d["writes"] = c.writes;
    d["bytes_written"] = c.bytes_written;
    d["reads"] = c.reads;
    d["bytes_read"] = c.bytes_read;
    d["msgs_sent"] = c.msgs_sent;
    d["bytes_sent"] = c.bytes_sent;
    d["msgs_received"] = c.msgs_received;
    d["bytes_received"] = c.bytes_received;
    d["remote_writes"] = c.remote_writes;
    if (c.net.present) {  // net channel: the flow and each of its paths
      const NetCounters& n = c.net;
      py::dict f;
      f["packets_sent"] = n.packets_sent;
      f["payload_bytes_sent"] = n.payload_bytes_sent;
      f["packets_received"] = n.packets_received;
      f["payload_bytes_received"] = n.payload_bytes_received;
      f["retransmits"] = n.retransmits;
      f["timeouts"] = n.timeouts;
      f["tail_probes"] = n.tail_probes;
      f["acks_sent"] = n.acks_sent;
      f["acks_received"] = n.acks_received;
      f["srtt_us"] = n.srtt_us;
      f["rto_us"] = n.rto_us;
      f["drops"] = n.drops;
      py::list paths;
      for (const auto& p : n.paths) {
        py::dict pd;
        pd["packets_sent"] = p.packets_sent;
        pd["bytes_sent"] = p.bytes_sent;
        pd["retransmits"] = p.retransmits;
        pd["losses"] = p.losses;
        pd["timeouts"] = p.timeouts;
        pd["srtt_us"] = p.srtt_us;
        pd["cwnd_bytes"] = p.cwnd_bytes;
        pd["pacing_rate_bps"] = p.pacing_rate_bps;
        pd["inflight_bytes"] = p.inflight_bytes;
        paths.append(pd);
      }
      f["paths"] = paths;
      d["net"] = f;
    }
    peers.append(d);
  }
  py::dict out;
  out["peers"] = peers;
  out["drops"] = s.drops;
  out["completions_held"] = s.completions_held;
  out["operations_in_flight"] = s.operations_in_flight;
  return out;
}

}  // namespace uccl::python
