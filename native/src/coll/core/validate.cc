#include "coll/core/validate.h"

#include <algorithm>

namespace uccl {

namespace {

// The largest displacement + count: how many elements a buffer must hold.
uint64_t extent_of(const Layout& l) {
  uint64_t e = 0;
  for (size_t j = 0; j < l.counts.size(); ++j) e = std::max(e, l.displs[j] + l.counts[j]);
  return e;
}

}  // namespace

void ArgCheck::root(int root) const {
  if (root < 0 || root >= world) fail("root ", root, " is outside world of size ", world);
}

void ArgCheck::same_type(const Buffer& in, const Buffer& out) const {
  if (in.dtype != out.dtype) fail("input is ", dtype_name(in.dtype), " but output is ", dtype_name(out.dtype));
}

void ArgCheck::reduce_op(ReduceOp op, DataType t) const {
  if (op == ReduceOp::Avg && t == DataType::Bool) fail("avg is not defined for bool");
}

Counts ArgCheck::counts(const SignedCounts& v, const char* name) const {
  if (v.size() != size_t(world)) fail(name, " has ", v.size(), " entries for ", world, " ranks");
  Counts out(v.size());
  for (size_t j = 0; j < v.size(); ++j) {
    if (v[j] < 0) fail(name, "[", j, "] is negative");
    out[j] = uint64_t(v[j]);
  }
  return out;
}

Counts ArgCheck::displs(const std::optional<SignedCounts>& given, const Counts& counts, const char* name) const {
  if (given) return this->counts(*given, name);
  Counts out(counts.size(), 0);
  for (size_t j = 1; j < counts.size(); ++j) out[j] = out[j - 1] + counts[j - 1];
  return out;
}

ReduceOp reduce_op_named(const ArgCheck& at, std::string_view name) {
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Prod, ReduceOp::Min, ReduceOp::Max, ReduceOp::Avg})
    if (name == op_name(op)) return op;
  at.fail("unsupported reduce op '", name, "' (sum, prod, min, max, avg)");
}

void check_all_reduce(const ArgCheck& at, const Buffer& in, const Buffer& out, ReduceOp op) {
  at.same_type(in, out);
  if (in.count != out.count) at.fail("output has ", out.count, " elements, input ", in.count);
  at.reduce_op(op, in.dtype);
}

void check_reduce(const ArgCheck& at, const Buffer& in, const Buffer& out, ReduceOp op, int root) {
  at.root(root);
  if (at.rank == root) {
    at.same_type(in, out);
    if (out.count != in.count) at.fail("output has ", out.count, " elements, input ", in.count);
  }
  at.reduce_op(op, in.dtype);
}

void check_broadcast(const ArgCheck& at, int root) { at.root(root); }

void check_all_gather(const ArgCheck& at, const Buffer& in, const Buffer& out) {
  at.same_type(in, out);
  if (out.count != in.count * uint64_t(at.world))
    at.fail("output has ", out.count, " elements, expected ", at.world, " x ", in.count);
}

Layout check_all_gather_v(const ArgCheck& at, const Buffer& in, const Buffer& out, const SignedCounts& counts,
                          const std::optional<SignedCounts>& displs) {
  Layout l;
  l.counts = at.counts(counts, "counts");
  l.displs = at.displs(displs, l.counts, "displs");
  at.same_type(in, out);
  uint64_t mine = l.counts[size_t(at.rank)];
  if (in.count != mine) at.fail("input has ", in.count, " elements but counts[", at.rank, "] = ", mine);
  if (extent_of(l) > out.count)
    at.fail("output of ", out.count, " elements is too small for counts and displacements reaching ", extent_of(l));
  return l;
}

void check_reduce_scatter(const ArgCheck& at, const Buffer& in, const Buffer& out, ReduceOp op) {
  at.same_type(in, out);
  if (in.count != out.count * uint64_t(at.world))
    at.fail("input has ", in.count, " elements, expected ", at.world, " x ", out.count);
  at.reduce_op(op, in.dtype);
}

Counts check_reduce_scatter_v(const ArgCheck& at, const Buffer& in, const Buffer& out, const SignedCounts& counts,
                              ReduceOp op) {
  Counts c = at.counts(counts, "counts");
  at.same_type(in, out);
  uint64_t total = 0;
  for (auto n : c) total += n;
  uint64_t mine = c[size_t(at.rank)];
  if (in.count != total || out.count < mine)
    at.fail("input has ", in.count, " elements (counts sum to ", total, "), output ", out.count, " (needs ", mine, ")");
  at.reduce_op(op, in.dtype);
  return c;
}

void check_all_to_all(const ArgCheck& at, const Buffer& in, const Buffer& out) {
  at.same_type(in, out);
  if (in.count != out.count || in.count % uint64_t(at.world))
    at.fail("input (", in.count, ") and output (", out.count, ") must have the same size, divisible by ", at.world);
}

std::pair<Layout, Layout> check_all_to_all_v(const ArgCheck& at, const Buffer& in, const SignedCounts& send_counts,
                                             const std::optional<SignedCounts>& send_displs, const Buffer& out,
                                             const SignedCounts& recv_counts,
                                             const std::optional<SignedCounts>& recv_displs) {
  Layout s, r;
  s.counts = at.counts(send_counts, "send_counts");
  r.counts = at.counts(recv_counts, "recv_counts");
  s.displs = at.displs(send_displs, s.counts, "send_displs");
  r.displs = at.displs(recv_displs, r.counts, "recv_displs");
  at.same_type(in, out);
  if (extent_of(s) > in.count) at.fail("send counts reach element ", extent_of(s), " of an input of ", in.count);
  if (extent_of(r) > out.count) at.fail("recv counts reach element ", extent_of(r), " of an output of ", out.count);
  return {std::move(s), std::move(r)};
}

void check_gather(const ArgCheck& at, const Buffer& in, const std::optional<Buffer>& out, int root) {
  at.root(root);
  if (at.rank != root) return;
  if (!out) at.fail("the root needs an output");
  at.same_type(in, *out);
  if (out->count != in.count * uint64_t(at.world))
    at.fail("output must be ", at.world, " x ", in.count, " elements, got ", out->count);
}

void check_scatter(const ArgCheck& at, const std::optional<Buffer>& in, const Buffer& out, int root) {
  at.root(root);
  if (at.rank != root) return;
  if (!in) at.fail("the root needs an input");
  at.same_type(*in, out);
  if (in->count != out.count * uint64_t(at.world))
    at.fail("input must be ", at.world, " x ", out.count, " elements, got ", in->count);
}

}  // namespace uccl
