// The checks on a collective's arguments, made before anything is sent: buffer sizes
// against the world, per-rank counts and displacements, the root, the reduce op, and
// that input and output hold one element type. A bad argument raises
// Error(Argument, "rank R: OP: cause"). The Communicator's public calls run them, so
// C++ callers and the Python bindings get the same checks and the same messages.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "coll/core/dtype.h"
#include "common/errors.h"

namespace uccl {

// Host memory holding `count` elements of `dtype`. `owner`, when set, keeps that memory
// alive (a Python object and its buffer export): a queued call holds it until it ends.
struct Buffer {
  uint64_t addr = 0;
  uint64_t count = 0;
  DataType dtype = DataType::Uint8;
  std::shared_ptr<void> owner;
};

// Per-rank element counts or displacements.
using Counts = std::vector<uint64_t>;
// As callers give them: signed, so that a negative entry is reported instead of wrapping.
using SignedCounts = std::vector<int64_t>;

// Where each rank's block lies in a buffer.
struct Layout {
  Counts counts, displs;
};

// One call as errors name it: "rank R: OP: ...".
struct ArgCheck {
  int rank;
  int world;
  const char* op;

  template <typename... Parts>
  [[noreturn]] void fail(const Parts&... parts) const {
    raise(ErrorKind::Argument, "rank ", rank, ": ", op, ": ", parts...);
  }
  void root(int root) const;
  void same_type(const Buffer& in, const Buffer& out) const;
  // Bool has no average.
  void reduce_op(ReduceOp op, DataType t) const;
  // One entry per rank, none negative.
  Counts counts(const SignedCounts& v, const char* name) const;
  // `given`, or blocks packed one after another.
  Counts displs(const std::optional<SignedCounts>& given, const Counts& counts, const char* name) const;
};

// "sum", "prod", "min", "max" or "avg".
ReduceOp reduce_op_named(const ArgCheck& at, std::string_view name);

// One check per collective; the variable-size ones return the layout they were given.
void check_all_reduce(const ArgCheck& at, const Buffer& in, const Buffer& out, ReduceOp op);
void check_reduce(const ArgCheck& at, const Buffer& in, const Buffer& out, ReduceOp op, int root);
void check_broadcast(const ArgCheck& at, int root);
void check_all_gather(const ArgCheck& at, const Buffer& in, const Buffer& out);
Layout check_all_gather_v(const ArgCheck& at, const Buffer& in, const Buffer& out, const SignedCounts& counts,
                          const std::optional<SignedCounts>& displs);
void check_reduce_scatter(const ArgCheck& at, const Buffer& in, const Buffer& out, ReduceOp op);
Counts check_reduce_scatter_v(const ArgCheck& at, const Buffer& in, const Buffer& out, const SignedCounts& counts,
                              ReduceOp op);
void check_all_to_all(const ArgCheck& at, const Buffer& in, const Buffer& out);
// {send layout, recv layout}
std::pair<Layout, Layout> check_all_to_all_v(const ArgCheck& at, const Buffer& in, const SignedCounts& send_counts,
                                             const std::optional<SignedCounts>& send_displs, const Buffer& out,
                                             const SignedCounts& recv_counts,
                                             const std::optional<SignedCounts>& recv_displs);
// The root's output (rank == root) must be there; other ranks' is unused.
void check_gather(const ArgCheck& at, const Buffer& in, const std::optional<Buffer>& out, int root);
// The root's input (rank == root) must be there; other ranks' is unused.
void check_scatter(const ArgCheck& at, const std::optional<Buffer>& in, const Buffer& out, int root);

}  // namespace uccl
