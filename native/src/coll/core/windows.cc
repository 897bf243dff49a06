#include "coll/core/windows.h"

#include <algorithm>
#include <cstring>

#include "common/errors.h"

namespace uccl {

CallWindows::CallWindows(CollContext& c, const void* in, uint64_t in_bytes, void* out, uint64_t out_bytes)
    : c_(c), outbox_(size_t(c.world)), theirs_(size_t(c.world)), refused_before_(size_t(c.world)) {
  for (int p = 0; p < c.world; ++p) refused_before_[size_t(p)] = c.ep.refused_by_us(p);
  try {
    if (in_bytes && in == out && in_bytes == out_bytes) {
      in_key_ = out_key_ = c_.ep.register_region(uint64_t(out), out_bytes, kRemoteRead | kRemoteWrite);
    } else {
      if (in_bytes) in_key_ = c_.ep.register_region(uint64_t(in), in_bytes, kRemoteRead);
      if (out_bytes) out_key_ = c_.ep.register_region(uint64_t(out), out_bytes, kRemoteWrite);
    }
    outbox_key_ = c_.ep.register_region(uint64_t(outbox_.data()), outbox_.size() * sizeof(Window), 0);
  } catch (...) {
    release();
    throw;
  }
}

CallWindows::~CallWindows() {
  // A call that failed before close() leaves its "done" notes unwaited: they carry no
  // data, so nobody need wait, but their completions must not stay in the endpoint.
  for (const auto& x : notes_)
    if (!x.done) c_.ep.detach(x.wr_id);
  release();
}

void CallWindows::release() {
  for (uint64_t* k : {&in_key_, &out_key_, &outbox_key_}) {
    if (!*k) continue;
    uint64_t key = *k;
    if (k == &in_key_ && in_key_ == out_key_) continue;  // one region, removed as out_key_
    try {
      c_.ep.deregister_region(key);
    } catch (...) {
    }
  }
  in_key_ = out_key_ = outbox_key_ = 0;
}

void CallWindows::grant(const std::vector<int>& to, const std::vector<Window>& grants) {
  to_.insert(to_.end(), to.begin(), to.end());
  for (int p : to) {
    Window w = grants[size_t(p)];
    w.in_key = w.in_len ? in_key_ : 0;
    w.out_key = w.out_len ? out_key_ : 0;
    outbox_[size_t(p)] = w;
  }
  // All at once: each descriptor has its own outbox entry, so none waits for another's ack.
  std::vector<Endpoint::Posted> posted;
  size_t waited = 0;
  try {
    for (int p : to)
      posted.push_back(
          c_.links.post(p, outbox_key_, uint64_t(p) * sizeof(Window), sizeof(Window), Links::Carries::Window));
    for (; waited < posted.size(); ++waited) c_.links.sent(posted[waited]);
  } catch (...) {
    // The descriptors still in flight read outbox_, which goes away with this call.
    for (size_t i = waited + 1; i < posted.size(); ++i) {
      try {
        c_.links.sent(posted[i]);
      } catch (...) {
      }
    }
    throw;
  }
}

void CallWindows::learn(const std::vector<int>& from) {
  from_.insert(from_.end(), from.begin(), from.end());
  for (int p : from) {
    std::memcpy(&theirs_[size_t(p)], c_.links.recv(p, sizeof(Window), Links::Carries::Window), sizeof(Window));
    c_.links.release(p);
  }
}

std::vector<int> CallWindows::others() const {
  std::vector<int> peers;
  for (int s = 1; s < c_.world; ++s) peers.push_back(c_.peer(s));
  return peers;
}

void CallWindows::open_all(const std::vector<Window>& grants) {
  grant(others(), grants);
  learn(others());
}

void CallWindows::expect(int peer, uint64_t in_len, uint64_t out_len, const char* what) const {
  const Window& w = of(peer);
  if (w.in_len != in_len || w.out_len != out_len)
    c_.links.abort(format_msg("rank ", peer, " offers ", w.in_len, " bytes to read and ", w.out_len,
                              " bytes to write where rank ", c_.rank, " needs ", in_len, " and ", out_len, " for ",
                              what, " (sizes differ across ranks)"));
}

void CallWindows::close() { close(from_, to_); }

void CallWindows::writes_posted(const std::vector<int>& used) {
  for (int p : used) {
    notes_.push_back(c_.links.post(p, outbox_key_, 0, 0, Links::Carries::Window));
    noted_.push_back(p);
  }
}

void CallWindows::close(const std::vector<int>& used, const std::vector<int>& lent) {
  for (int p : used)
    if (std::find(noted_.begin(), noted_.end(), p) == noted_.end())
      notes_.push_back(c_.links.post(p, outbox_key_, 0, 0, Links::Carries::Window));
  for (const auto& x : notes_) c_.links.sent(x);
  notes_.clear();
  for (int p : lent) {
    c_.links.recv(p, 0, Links::Carries::Window);
    c_.links.release(p);
    // A writer's note may overtake nothing, but it does not say its writes were accepted.
    if (c_.ep.refused_by_us(p) != refused_before_[size_t(p)])
      c_.links.abort(format_msg("rank ", c_.rank, " refused an operation of rank ", p,
                                " on the window it lent it (out of bounds or a stale key)"));
  }
}

std::vector<Window> block_grants(const std::vector<uint64_t>& off_bytes, const std::vector<uint64_t>& len_bytes,
                                 bool readable, bool writable) {
  std::vector<Window> g(off_bytes.size());
  for (size_t p = 0; p < g.size(); ++p) {
    if (readable) g[p].in_off = off_bytes[p], g[p].in_len = len_bytes[p];
    if (writable) g[p].out_off = off_bytes[p], g[p].out_len = len_bytes[p];
  }
  return g;
}

}  // namespace uccl
