#include "coll/algorithms/algorithms.h"
#include "coll/algorithms/fold_peers.h"
#include "coll/core/published.h"
#include "common/errors.h"
#include "common/stream_copy.h"

namespace uccl {

namespace {
// The peers that publish their blocks for us (published.h), mapped.
std::vector<PeerBlock> published_blocks(CollContext& c, const CallWindows& win, const std::vector<uint64_t>& off,
                                        const std::vector<uint64_t>& seg, const LocalBuffer& out) {
  std::vector<PeerBlock> blocks;
  for (int s = 1; s < c.world; ++s) {
    const int p = c.peer(s);
    const Window& w = win.of(p);
    if (!w.res_key) continue;  // that rank writes its block into our output itself
    if (w.res_len != seg[size_t(p)] || !w.res_chunk || !w.res_channels || w.res_channels > 64 || !w.res_slots ||
        w.res_slots > 64)
      c.links.abort(format_msg("rank ", p, " publishes ", w.res_len, " bytes where rank ", c.rank, " expects ",
                               seg[size_t(p)], " (sizes differ across ranks)"));
    PublishedShape shape{w.res_chunk, int(w.res_channels), c.world, int(w.res_slots)};
    char* at = c.ep.map_remote(p, w.res_key, 0, shape.bytes());
    if (!at) c.links.abort(format_msg("rank ", c.rank, " cannot map the results rank ", p, " publishes"));
    blocks.emplace_back(p, at, shape, w.res_len, out.at(off[size_t(p)]), c.rank);
  }
  return blocks;
}
}  // namespace

// Rank r owns block r: chunk by chunk it reads block r of every peer's input into
// a cache-sized scratch, folds them with its own and streams the sum into its own
// output. The sum reaches the peers one of two ways. With `published` (room in this
// rank's shared arena; every peer on this host) it is folded into a slot there and
// each peer copies it out itself (published.h); a channel waits for a free slot
// copying out its peers' chunks meanwhile, so no two ranks wait for each other.
// Otherwise it is written into every peer's output. Only this rank ever touches
// block r anywhere, and a peer copies a chunk into its output only after this rank
// has read its input there, so in-place calls are safe.
void all_reduce_direct(CollContext& c, const LocalBuffer& in, const LocalBuffer& out, uint64_t count,
                       const Scratch& scratch, const Scratch& published) {
  const uint64_t es = c.esize, bytes = count * es;
  auto seg = even_parts(count, c.world);
  auto off = prefix_offsets(seg);
  for (size_t j = 0; j < seg.size(); ++j) seg[j] *= es, off[j] *= es;
  const uint64_t base = off[size_t(c.rank)], mine = seg[size_t(c.rank)];
  const bool publishing = published.data != nullptr;
  const PublishedShape shape{c.chunk, c.channels, c.world, kPublishedSlots};
  PublishedBlock pub(published.data, shape, c.rank);
  auto grants = block_grants(off, seg, true, true);
  if (publishing) {
    pub.reset();
    for (auto& g : grants)
      g.res_key = published.key, g.res_len = mine, g.res_chunk = c.chunk, g.res_channels = uint64_t(c.channels),
      g.res_slots = kPublishedSlots;
  }
  CallWindows win(c, in.at(0), bytes, out.at(0), bytes);
  win.open_all(grants);
  for (int s = 1; s < c.world; ++s) win.expect(c.peer(s), mine, mine, "all_reduce");
  const std::vector<PeerBlock> blocks = published_blocks(c, win, off, seg, out);
  std::vector<PeerPulls> pulls;  // one per channel
  pulls.reserve(size_t(c.channels));
  for (int ch = 0; ch < c.channels; ++ch) pulls.emplace_back(c, blocks, ch, bytes);
  for_each_owned_chunk(
      c, mine,
      [&](OneSided& ops, const OwnedChunk& k) {
        PeerPulls& mine_to_copy = pulls[size_t(k.ch)];
        char* sum = scratch.data + k.acc;
        if (publishing) {
          mine_to_copy.wait_until([&] { return pub.slot_free(k.ch, k.n); }, "all_reduce");
          sum = pub.slot(k.ch, k.n);
        }
        fold_peers(c, win, ops, in.at(base + k.o), scratch, k.theirs, sum, k.o, k.len);
        if (publishing) {
          pub.publish(k.ch, k.n + 1);
          for (int s = 1; s < c.world; ++s) c.ep.wake(c.peer(s));
        } else {
          for (int s = 1; s < c.world; ++s) {
            const Window& w = win.of(c.peer(s));
            ops.write(c.peer(s), scratch.key, k.acc, k.len, w.out_key, w.out_off + k.o);
          }
        }
        copy_out(out.at(base + k.o), sum, k.len, bytes);
        ops.wait_all();
        mine_to_copy.take_ready();
      },
      [&](OneSided&, int ch) {
        PeerPulls& p = pulls[size_t(ch)];
        p.wait_until([&] { return p.finished(); }, "all_reduce");
      });
  win.close();
}

}  // namespace uccl
