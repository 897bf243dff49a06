// Windows: one call's buffers opened to peers for one-sided access, the basis of
// the "direct" algorithms. Each rank registers its input (peers may read it) and
// output (peers may write it) for the length of the call, tells each peer which
// part of each it may touch, and before returning waits until every peer that
// was given a window says it is done with it. Window descriptors and "done" notes
// travel as link chunks, so they carry the call's (seq, signature) check: a peer in
// another collective is caught before any byte of user memory moves.
#pragma once
#include <cstdint>
#include <vector>

#include "coll/core/context.h"

namespace uccl {

// What one rank lets a peer touch: [in_off, in_off + in_len) of its input for
// reading, [out_off, out_off + out_len) of its output for writing, and the res_len
// bytes of results it publishes (published.h: in res_chunk chunks by res_channels
// channels through res_slots slots each; res_key 0: none) for the peer to copy out.
struct Window {
  uint64_t in_key = 0, in_off = 0, in_len = 0;
  uint64_t out_key = 0, out_off = 0, out_len = 0;
  uint64_t res_key = 0, res_len = 0, res_chunk = 0, res_channels = 0, res_slots = 0;
};

class CallWindows {
 public:
  // Registers in/out for remote access (a buffer used in place is one region;
  // a zero length registers nothing).
  CallWindows(CollContext& c, const void* in, uint64_t in_bytes, void* out, uint64_t out_bytes);
  ~CallWindows();  // deregisters: a peer that still tries is refused by the transport
  CallWindows(const CallWindows&) = delete;
  CallWindows& operator=(const CallWindows&) = delete;

  // Gives each peer in `to` the window grants[peer] (offsets and lengths; the keys
  // are filled in here).
  void grant(const std::vector<int>& to, const std::vector<Window>& grants);
  // Learns the window of each peer in `from` (waits for it).
  void learn(const std::vector<int>& from);
  // Both, with every other rank.
  void open_all(const std::vector<Window>& grants);
  std::vector<int> others() const;
  const Window& of(int peer) const { return theirs_[size_t(peer)]; }

  // Aborts the call on every rank unless `peer`'s window has the lengths this
  // rank's arguments imply (the ranks were called with different sizes).
  void expect(int peer, uint64_t in_len, uint64_t out_len, const char* what) const;

  // Tells the peers whose windows we only wrote into that we are done as soon as
  // the writes are posted, without waiting for them to complete: the note is a
  // write-with-immediate on the same connection, and a transport delivers it only
  // after every operation posted before it to that peer has landed (a shm write is
  // done when posted; a net flow releases its events in order). Saves the write's
  // ack and a second crossing of the network at the end of a call. Not for windows
  // we read from: a read is done only once its data is back here.
  void writes_posted(const std::vector<int>& used);
  // Tells the peers whose windows we used that we are done (unless writes_posted did),
  // then waits until the peers we gave windows to are done with ours. Only then may
  // the call return.
  void close();
  // The same for the windows actually used / lent (a peer's window can go unused).
  void close(const std::vector<int>& used, const std::vector<int>& lent);

 private:
  void release();

  CollContext& c_;
  uint64_t in_key_ = 0, out_key_ = 0;
  std::vector<Window> outbox_;  // what we grant, one per peer; sent from here
  uint64_t outbox_key_ = 0;
  std::vector<Window> theirs_;
  std::vector<int> to_, from_;
  std::vector<int> noted_;  // peers told "done" by writes_posted
  std::vector<Endpoint::Posted> notes_;  // those notes, until close() waits for them
  std::vector<uint64_t> refused_before_;  // per peer: its operations our side had refused
};

// Each rank's part of an even split; all_reduce and reduce_scatter own one block each.
std::vector<Window> block_grants(const std::vector<uint64_t>& off_bytes, const std::vector<uint64_t>& len_bytes,
                                 bool readable, bool writable);

}  // namespace uccl
