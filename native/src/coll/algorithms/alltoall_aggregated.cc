// all_to_all with several ranks per host, aggregated per host pair (like NCCL's PXN):
// rank (h, i) is local rank i of host h. Inside the host, over shared memory, (h, i)
// hands local rank j everything it has for local rank j of every host (and a header:
// how much for each host). Then along rail j, (h, j) sends (g, j) in one message what
// the L ranks of host h have for it; what arrives is final. Per host pair L messages
// cross instead of L * L: W (H - 1) cross-host messages in all instead of W (W - L).
// Both phases send to every peer at once, so a small call costs two message latencies
// (one of them shared memory) rather than one per peer. Works in bytes: any dtype, and
// per-rank counts (all_to_all_v) alike.
#include <algorithm>
#include <cstring>
#include <functional>

#include "coll/algorithms/algorithms.h"
#include "coll/algorithms/levels.h"
#include "coll/algorithms/subgroup.h"

namespace uccl {

namespace {

// Everyone sends to every peer of the (sub)group at once, chunk by chunk: chunk k goes to
// every peer before chunk k is taken from any, so a small call waits for one message
// latency, not one per peer. Waits only on peers at an earlier chunk (or at chunk k
// still posting), so there is no cycle. on_chunk(peer, data, offset, len) consumes a
// received chunk before its slot goes back. Empty messages still send one empty chunk.
template <typename OnChunk>
void exchange_all(CollContext& c, uint64_t skey, const std::vector<uint64_t>& soff,
                  const std::vector<uint64_t>& slen, const std::vector<uint64_t>& rlen, OnChunk&& on_chunk) {
  uint64_t rounds = 0;
  for (int p = 0; p < c.world; ++p)
    if (p != c.rank)
      rounds = std::max({rounds, CollContext::chunks(slen[size_t(p)], c.chunk),
                         CollContext::chunks(rlen[size_t(p)], c.chunk)});
  std::vector<Endpoint::Posted> posted;
  for (uint64_t k = 0; k < rounds; ++k) {
    posted.clear();
    for (int s = 1; s < c.world; ++s) {  // rank + s first: peers are spread over one another's turns
      const size_t p = size_t(c.peer(s));
      if (k < CollContext::chunks(slen[p], c.chunk))
        posted.push_back(c.links.post(int(p), skey, soff[p] + k * c.chunk, c.chunk_len(slen[p], k)));
    }
    for (const auto& x : posted) c.links.sent(x);
    for (int s = 1; s < c.world; ++s) {
      const size_t p = size_t(c.peer(-s));
      if (k >= CollContext::chunks(rlen[p], c.chunk)) continue;
      const uint64_t len = c.chunk_len(rlen[p], k);
      on_chunk(p, c.links.recv(int(p), len), k * c.chunk, len);
      c.links.release(int(p));
    }
  }
}

// A byte stream laid out as consecutive pieces, each going to its own place.
struct Piece {
  char* dst;
  uint64_t len;
};
void scatter(const std::vector<Piece>& pieces, const char* data, uint64_t off, uint64_t len) {
  uint64_t base = 0;
  for (const Piece& p : pieces) {
    if (len == 0) return;
    if (off < base + p.len) {
      const uint64_t n = std::min(len, base + p.len - off);
      std::memcpy(p.dst + (off - base), data, n);
      data += n, off += n, len -= n;
    }
    base += p.len;
  }
}

}  // namespace

bool all_to_all_aggregates(const Topology& topo, int rank, int world) {
  if (topo.levels.empty()) return false;
  const Split s = split_among(topo, 0, rank, all_ranks(world));
  return !s.flat && s.level == 0;
}

void all_to_all_aggregated(CollContext& c, const Topology& topo, const LocalBuffer& in, const LocalBuffer& out,
                           const std::vector<uint64_t>& send_counts, const std::vector<uint64_t>& send_displs,
                           const std::vector<uint64_t>& recv_counts, const std::vector<uint64_t>& recv_displs,
                           const std::function<Scratch(uint64_t)>& scratch) {
  const Split s = split_among(topo, 0, c.rank, all_ranks(c.world));
  if (s.flat || s.level != 0)
    raise(ErrorKind::Generic, "rank ", c.rank, ": all_to_all aggregated needs hosts of equal size, several ranks each");
  const size_t H = s.groups.size(), L = s.mine().size(), h = s.group, i = s.pos;
  const uint64_t es = c.esize;
  auto at = [&](size_t g, size_t j) { return size_t(s.groups[g][j]); };
  auto sent_to = [&](size_t r) { return send_counts[r] * es; };
  auto got_from = [&](size_t r) { return recv_counts[r] * es; };

  // Headers: what we have for local rank j of each host; K[j][g]: what local rank j has
  // for our local position on host g (ours from our own header).
  const uint64_t hdr = H * sizeof(uint64_t);
  std::vector<uint64_t> K(L * H);
  {
    const Scratch sc = scratch(L * hdr);
    auto* mine = reinterpret_cast<uint64_t*>(sc.data);
    for (size_t j = 0; j < L; ++j)
      for (size_t g = 0; g < H; ++g) mine[j * H + g] = sent_to(at(g, j));
    std::memcpy(&K[i * H], &mine[i * H], hdr);
    std::vector<uint64_t> off(L), len(L, hdr);
    for (size_t j = 0; j < L; ++j) off[j] = j * hdr;
    Subgroup host(c, s.mine(), c.op);
    exchange_all(host.ctx(), sc.key, off, len, len, [&](size_t j, const char* data, uint64_t o, uint64_t n) {
      std::memcpy(reinterpret_cast<char*>(&K[j * H]) + o, data, n);
    });
  }
  for (size_t j = 0; j < L; ++j)
    if (K[j * H + h] != got_from(at(h, j)))
      c.links.abort(format_msg("all_to_all: rank ", at(h, j), " sends rank ", c.rank, " ", K[j * H + h],
                               " bytes but it expects ", got_from(at(h, j))));

  // Working memory: [packed input, by local rank j then host g | to forward, by host g then local rank j].
  std::vector<uint64_t> pack_off(L + 1, 0), fwd_off(H + 1, 0);
  for (size_t j = 0; j < L; ++j) {
    pack_off[j + 1] = pack_off[j];
    for (size_t g = 0; g < H; ++g) pack_off[j + 1] += sent_to(at(g, j));
  }
  for (size_t g = 0; g < H; ++g) {
    fwd_off[g + 1] = fwd_off[g];
    if (g != h)
      for (size_t j = 0; j < L; ++j) fwd_off[g + 1] += K[j * H + g];
  }
  const uint64_t fwd_base = pack_off[L];
  const Scratch sc = scratch(fwd_base + fwd_off[H]);
  // The input is read whole before anything lands in the output (in place is fine).
  for (size_t j = 0, o = 0; j < L; ++j)
    for (size_t g = 0; g < H; ++g) {
      const size_t r = at(g, j);
      if (sent_to(r)) std::memcpy(sc.data + o, in.at(send_displs[r] * es), sent_to(r));
      o += sent_to(r);
    }

  // Phase 1, inside the host: from local rank j, its part for our own host goes to the
  // output, the rest to the forwarding area.
  std::vector<std::vector<Piece>> from_local(L);
  for (size_t j = 0; j < L; ++j) {
    for (size_t g = 0; g < H; ++g) {
      char* dst = nullptr;
      if (g == h) {
        dst = out.at(recv_displs[at(h, j)] * es);
      } else {
        uint64_t o = fwd_base + fwd_off[g];
        for (size_t k = 0; k < j; ++k) o += K[k * H + g];
        dst = sc.data + o;
      }
      from_local[j].push_back(Piece{dst, K[j * H + g]});
    }
  }
  {
    std::vector<uint64_t> off(L), slen(L), rlen(L);
    for (size_t j = 0; j < L; ++j) {
      off[j] = pack_off[j], slen[j] = pack_off[j + 1] - pack_off[j];
      for (size_t g = 0; g < H; ++g) rlen[j] += K[j * H + g];
    }
    scatter(from_local[i], sc.data + pack_off[i], 0, slen[i]);  // our own part, as from a peer
    Subgroup host(c, s.mine(), c.op);
    exchange_all(host.ctx(), sc.key, off, slen, rlen, [&](size_t j, const char* data, uint64_t o, uint64_t n) {
      scatter(from_local[j], data, o, n);
    });
  }

  // Phase 2, along our rail: host g's message holds its L ranks' blocks for us, in local order.
  std::vector<std::vector<Piece>> from_host(H);
  std::vector<uint64_t> off(H), slen(H), rlen(H);
  for (size_t g = 0; g < H; ++g) {
    off[g] = fwd_base + fwd_off[g], slen[g] = fwd_off[g + 1] - fwd_off[g];
    for (size_t j = 0; j < L; ++j) {
      from_host[g].push_back(Piece{out.at(recv_displs[at(g, j)] * es), got_from(at(g, j))});
      rlen[g] += got_from(at(g, j));
    }
  }
  Subgroup rail(c, s.rail(), c.op);
  exchange_all(rail.ctx(), sc.key, off, slen, rlen, [&](size_t g, const char* data, uint64_t o, uint64_t n) {
    scatter(from_host[g], data, o, n);
  });
}

}  // namespace uccl
