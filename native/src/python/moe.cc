// uccl._native.moe: the per-call row work of low-latency MoE (uccl/overlap/moe/low_latency.py)
// in one native call each, without the GIL: routing (a counting sort of the (token, expert)
// pairs by expert), copies of row segments between buffers, and combine's weighted sum.
// On a host with fewer cores than ranks these replace index lists built in Python and
// extra passes over the tokens (index_select then index_copy_), which the other ranks wait for.
// Buffers come as addresses with their sizes (the caller passes contiguous tensors);
// every index is checked against those sizes.
#include <cstdint>
#include <cstring>
#include <vector>

#include <pybind11/stl.h>

#include "common/errors.h"
#include "python/bind.h"
#include "python/gil.h"

namespace py = pybind11;

namespace uccl::python {

namespace {

template <typename T>
T* at(uint64_t addr) {
  return reinterpret_cast<T*>(addr);
}

// Sorts the valid (token, slot) pairs of topk_idx [T, k] by expert (token order within an
// expert) and fills, per pair (-1 where the slot is -1): `positions`, its row within its
// expert's rows from us; `back`, its row in combine's landing ([owner rank][its experts'
// rows, expert by expert, `max_tokens` each]); and, per sorted row, `token_of`. `per_expert`
// [E] gets the counts. Returns the number of valid pairs; raises when an expert gets more
// than max_tokens rows.
int64_t route(uint64_t topk_idx, int64_t T, int64_t k, int64_t E, int64_t E_loc, int64_t max_tokens,
              uint64_t per_expert_out, uint64_t token_of_out, uint64_t positions_out, uint64_t back_out) {
  if (T < 0 || k < 1 || E < 1 || E_loc < 1 || E % E_loc) raise(ErrorKind::Argument, "moe.route: bad shape");
  const int64_t* idx = at<const int64_t>(topk_idx);
  int64_t* count = at<int64_t>(per_expert_out);
  int64_t *token_of = at<int64_t>(token_of_out), *pos = at<int64_t>(positions_out), *back = at<int64_t>(back_out);
  std::vector<int64_t> start(size_t(E) + 1, 0), cursor(size_t(E), 0);
  std::memset(count, 0, size_t(E) * 8);
  for (int64_t i = 0; i < T * k; ++i) {
    int64_t e = idx[i];
    if (e < -1 || e >= E) raise(ErrorKind::Argument, "moe.route: expert id ", e, " out of [-1, ", E, ")");
    if (e >= 0) ++count[e];
  }
  for (int64_t e = 0; e < E; ++e) {
    if (count[e] > max_tokens)
      raise(ErrorKind::Argument, "an expert gets ", count[e], " rows from this rank, more than "
            "num_max_dispatch_tokens_per_rank=", max_tokens, " (repeated expert ids in topk_idx?)");
    start[size_t(e) + 1] = start[size_t(e)] + count[e];
  }
  for (int64_t i = 0; i < T * k; ++i) {
    int64_t e = idx[i];
    if (e < 0) {
      pos[i] = back[i] = -1;
      continue;
    }
    int64_t r = start[size_t(e)] + cursor[size_t(e)]++;  // sorted row
    int64_t owner = e / E_loc;
    token_of[r] = i / k;
    pos[i] = r - start[size_t(e)];
    back[i] = owner * E_loc * max_tokens + r - start[size_t(owner * E_loc)];
  }
  return start[size_t(E)];
}

// Copies row segments: for each (src_row, dst_row, rows) in `segments` (flat triples),
// `width` bytes at column src_col of each source row to column dst_col of each destination
// row. A segment of whole, equally wide rows is one memcpy.
void copy_rows(uint64_t dst, uint64_t dst_row_bytes, uint64_t dst_rows, uint64_t dst_col, uint64_t src,
               uint64_t src_row_bytes, uint64_t src_rows, uint64_t src_col, uint64_t width,
               const std::vector<int64_t>& segments) {
  if (segments.size() % 3) raise(ErrorKind::Argument, "moe.copy_rows: segments must be (src, dst, rows) triples");
  if (src_col + width > src_row_bytes || dst_col + width > dst_row_bytes)
    raise(ErrorKind::Argument, "moe.copy_rows: columns [", src_col, ", +", width, ") / [", dst_col, ", +", width,
          ") outside rows of ", src_row_bytes, " / ", dst_row_bytes, " bytes");
  for (size_t i = 0; i < segments.size(); i += 3) {
    int64_t s = segments[i], d = segments[i + 1], n = segments[i + 2];
    if (s < 0 || d < 0 || n < 0 || uint64_t(s + n) > src_rows || uint64_t(d + n) > dst_rows)
      raise(ErrorKind::Argument, "moe.copy_rows: segment (", s, ", ", d, ", ", n, ") outside ", src_rows, " / ",
            dst_rows, " rows");
  }
  GilRelease nogil;
  const bool whole = width == src_row_bytes && width == dst_row_bytes;
  for (size_t i = 0; i < segments.size(); i += 3) {
    const char* s = at<const char>(src) + uint64_t(segments[i]) * src_row_bytes + src_col;
    char* d = at<char>(dst) + uint64_t(segments[i + 1]) * dst_row_bytes + dst_col;
    uint64_t n = uint64_t(segments[i + 2]);
    if (whole) {
      std::memcpy(d, s, n * width);
      continue;
    }
    for (uint64_t r = 0; r < n; ++r) std::memcpy(d + r * dst_row_bytes, s + r * src_row_bytes, width);
  }
}

inline float load(const float* p, int64_t h) { return p[h]; }
inline float load(const uint16_t* p, int64_t h) {  // bfloat16: the top half of a float
  uint32_t u = uint32_t(p[h]) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

template <typename In>
void weighted_sum(float* out, const char* grid, uint64_t row_bytes, const int64_t* back, const float* w, int64_t T,
                  int64_t k, int64_t H) {
  for (int64_t t = 0; t < T; ++t) {
    float* o = out + t * H;
    bool first = true;
    for (int64_t j = 0; j < k; ++j) {
      int64_t b = back[t * k + j];
      if (b < 0) continue;
      const In* row = reinterpret_cast<const In*>(grid + uint64_t(b) * row_bytes);
      float wt = w[t * k + j];
      if (first) {
        for (int64_t h = 0; h < H; ++h) o[h] = wt * load(row, h);
      } else {
        for (int64_t h = 0; h < H; ++h) o[h] += wt * load(row, h);
      }
      first = false;
    }
    if (first) std::memset(o, 0, size_t(H) * 4);
  }
}

// out [T, H] float32 = sum over j with back[t, j] >= 0 of w[t, j] * grid row back[t, j]
// (float32 or bfloat16 values, rows of row_bytes; grid_rows of them).
void weighted_rows(uint64_t out, uint64_t grid, uint64_t grid_rows, uint64_t row_bytes, bool bf16, uint64_t back,
                   uint64_t weights, int64_t T, int64_t k, int64_t H) {
  if (T < 0 || k < 1 || H < 0 || uint64_t(H) * (bf16 ? 2 : 4) > row_bytes)
    raise(ErrorKind::Argument, "moe.weighted_rows: bad shape");
  const int64_t* b = at<const int64_t>(back);
  for (int64_t i = 0; i < T * k; ++i)
    if (b[i] >= int64_t(grid_rows)) raise(ErrorKind::Argument, "moe.weighted_rows: row ", b[i], " of ", grid_rows);
  GilRelease nogil;
  if (bf16)
    weighted_sum<uint16_t>(at<float>(out), at<const char>(grid), row_bytes, b, at<const float>(weights), T, k, H);
  else
    weighted_sum<float>(at<float>(out), at<const char>(grid), row_bytes, b, at<const float>(weights), T, k, H);
}

}  // namespace

void bind_moe(py::module_& m) {
  py::module_ moe = m.def_submodule("moe", "Row work of low-latency MoE (uccl/overlap/moe/low_latency.py).");
  moe.def("route", &route, py::arg("topk_idx"), py::arg("T"), py::arg("k"), py::arg("E"), py::arg("E_loc"),
          py::arg("max_tokens"), py::arg("per_expert"), py::arg("token_of"), py::arg("positions"), py::arg("back"));
  moe.def("copy_rows", &copy_rows, py::arg("dst"), py::arg("dst_row_bytes"), py::arg("dst_rows"), py::arg("dst_col"),
          py::arg("src"), py::arg("src_row_bytes"), py::arg("src_rows"), py::arg("src_col"), py::arg("width"),
          py::arg("segments"));
  moe.def("weighted_rows", &weighted_rows, py::arg("out"), py::arg("grid"), py::arg("grid_rows"),
          py::arg("row_bytes"), py::arg("bf16"), py::arg("back"), py::arg("weights"), py::arg("T"), py::arg("k"),
          py::arg("H"));
}

}  // namespace uccl::python
