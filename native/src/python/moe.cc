// uccl._native.moe: the per-call row work of low-latency MoE (uccl/overlap/moe/low_latency.py)
// in one native call each, without the GIL: routing (a counting sort of the (token, expert)
// pairs by expert), copies of row segments between buffers, and combine's weighted sum.
// On a host with fewer cores than ranks these replace index lists built in Python and
// extra passes over the tokens (index_select then index_copy_), which the other ranks wait for.
// Buffers come as addresses with their sizes (the caller passes contiguous tensors);
// every index is checked against those sizes.
#include <cstdint>
#include <cstring>
#include <tuple>
#include <utility>
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


// A payload part of a record: `width` bytes per row at byte `col` of the record row.
using Part = std::tuple<uint64_t, uint64_t, uint64_t, uint64_t>;  // address, row bytes there, rows there, col

// Dispatch's pack: per destination d, a header row block (hdr rows; its first E_loc int32 are
// our counts for d's experts) and then d's rows (sorted rows at_d .. at_d + n_d, sorted row r
// being token token_of[r]; part p's bytes at its column). Destination `me` goes to `own` (our
// slot in our own landing), the others to staging at row d * hdr + at_d. Returns per
// destination (staging byte offset, bytes); for `me`, offsets in `own`.
std::vector<std::pair<int64_t, int64_t>> ll_pack(const std::vector<Part>& parts, uint64_t token_of, int64_t n_rows,
                                                 uint64_t per_expert, int64_t R, int64_t E_loc, int64_t me, int64_t hdr,
                                                 uint64_t rb, uint64_t staging, uint64_t staging_bytes, uint64_t own,
                                                 uint64_t own_bytes) {
  const int64_t* counts = at<const int64_t>(per_expert);
  const int64_t* tok = at<const int64_t>(token_of);
  if (R < 1 || E_loc < 1 || hdr < 1 || uint64_t(4 * E_loc) > hdr * rb || me < 0 || me >= R)
    raise(ErrorKind::Argument, "moe.ll_pack: bad shape");
  std::vector<int64_t> sent(size_t(R), 0);
  int64_t total = 0;
  for (int64_t d = 0; d < R; ++d)
    for (int64_t e = 0; e < E_loc; ++e) sent[size_t(d)] += counts[d * E_loc + e];
  for (int64_t d = 0; d < R; ++d) total += sent[size_t(d)];
  if (total != n_rows) raise(ErrorKind::Argument, "moe.ll_pack: counts add up to ", total, ", not ", n_rows);
  if (uint64_t(R * hdr + n_rows) * rb > staging_bytes || uint64_t(hdr + sent[size_t(me)]) * rb > own_bytes)
    raise(ErrorKind::Argument, "moe.ll_pack: staging or landing slot too small");
  for (const auto& [addr, width, rows, col] : parts) {
    if (col + width > rb) raise(ErrorKind::Argument, "moe.ll_pack: a part overflows the record");
    for (int64_t r = 0; r < n_rows; ++r)
      if (tok[r] < 0 || uint64_t(tok[r]) >= rows) raise(ErrorKind::Argument, "moe.ll_pack: token ", tok[r], " of ", rows);
  }
  std::vector<std::pair<int64_t, int64_t>> segments;
  GilRelease nogil;
  int64_t first_row = 0;  // the first sorted row of destination d
  for (int64_t d = 0; d < R; ++d) {
    int64_t n = sent[size_t(d)];
    char* block = d == me ? at<char>(own) : at<char>(staging) + uint64_t(d * hdr + first_row) * rb;
    for (int64_t e = 0; e < E_loc; ++e) {
      int32_t c = int32_t(counts[d * E_loc + e]);
      std::memcpy(block + 4 * e, &c, 4);
    }
    char* rows_out = block + uint64_t(hdr) * rb;
    for (const auto& [addr, width, rows, col] : parts)
      for (int64_t r = 0; r < n; ++r)
        std::memcpy(rows_out + uint64_t(r) * rb + col, at<const char>(addr) + uint64_t(tok[first_row + r]) * width, width);
    segments.emplace_back(d == me ? 0 : int64_t(uint64_t(d * hdr + first_row) * rb), int64_t(uint64_t(hdr + n) * rb));
    first_row += n;
  }
  return segments;
}

// Dispatch's unpack: source s's slot starts at row base + s * slot of the landing: its counts
// for our E_loc experts (int32, in its first header row), then its rows expert by expert.
// recv part p ([E_loc, M * R] rows of `width` bytes at `addr`, taken from column `col` of the
// landed records) gets, per expert, the sources' rows in rank order. Counts come from peers,
// so they are checked against the slot before any copy. Fills recv_count (int32 [E_loc]) and
// returns (counts, starts), each [E_loc][R]: a source's rows for an expert, and where they start.
std::pair<std::vector<std::vector<int64_t>>, std::vector<std::vector<int64_t>>> ll_unpack(
    uint64_t landing, uint64_t landing_bytes, int64_t base, int64_t R, int64_t E_loc, int64_t hdr, int64_t slot,
    uint64_t rb, int64_t M, const std::vector<std::tuple<uint64_t, uint64_t, uint64_t>>& parts, uint64_t recv_count) {
  if (R < 1 || E_loc < 1 || M < 0 || base < 0 || uint64_t(base + R * slot) * rb > landing_bytes ||
      uint64_t(4 * E_loc) > hdr * rb || slot < hdr + E_loc * M)
    raise(ErrorKind::Argument, "moe.ll_unpack: bad shape");
  const std::vector<int64_t> row(size_t(R), 0);
  std::vector<std::vector<int64_t>> counts(size_t(E_loc), row), starts(size_t(E_loc), row);
  for (int64_t s = 0; s < R; ++s) {
    const char* head = at<const char>(landing) + uint64_t(base + s * slot) * rb;
    for (int64_t e = 0; e < E_loc; ++e) {
      int32_t c;
      std::memcpy(&c, head + 4 * e, 4);
      if (c < 0 || c > M) raise(ErrorKind::Argument, "moe.ll_unpack: rank ", s, " announced ", c, " rows for local "
                                "expert ", e, " (at most ", M, "): a mismatched call?");
      counts[size_t(e)][size_t(s)] = c;
    }
  }
  for (const auto& [addr, width, col] : parts)
    if (col + width > rb) raise(ErrorKind::Argument, "moe.ll_unpack: a part overflows the record");
  GilRelease nogil;
  int32_t* rc = at<int32_t>(recv_count);
  for (int64_t e = 0; e < E_loc; ++e) {
    int64_t total = 0;
    for (int64_t s = 0; s < R; ++s) starts[size_t(e)][size_t(s)] = total, total += counts[size_t(e)][size_t(s)];
    rc[e] = int32_t(total);
  }
  for (int64_t s = 0; s < R; ++s) {
    int64_t src_row = base + s * slot + hdr;  // this source's rows, expert by expert
    for (int64_t e = 0; e < E_loc; ++e) {
      int64_t n = counts[size_t(e)][size_t(s)];
      for (const auto& [addr, width, col] : parts) {
        char* dst = at<char>(addr) + uint64_t(e * M * R + starts[size_t(e)][size_t(s)]) * width;
        const char* src = at<const char>(landing) + uint64_t(src_row) * rb + col;
        if (width == rb) {
          std::memcpy(dst, src, uint64_t(n) * rb);
        } else {
          for (int64_t r = 0; r < n; ++r) std::memcpy(dst + uint64_t(r) * width, src + uint64_t(r) * rb, width);
        }
      }
      src_row += n;
    }
  }
  return {counts, starts};
}

}  // namespace

void bind_moe(py::module_& m) {
  py::module_ moe = m.def_submodule("moe", "Row work of low-latency MoE (uccl/overlap/moe/low_latency.py).");
  moe.def("route", &route, py::arg("topk_idx"), py::arg("T"), py::arg("k"), py::arg("E"), py::arg("E_loc"),
          py::arg("max_tokens"), py::arg("per_expert"), py::arg("token_of"), py::arg("positions"), py::arg("back"));
  moe.def("copy_rows", &copy_rows, py::arg("dst"), py::arg("dst_row_bytes"), py::arg("dst_rows"), py::arg("dst_col"),
          py::arg("src"), py::arg("src_row_bytes"), py::arg("src_rows"), py::arg("src_col"), py::arg("width"),
          py::arg("segments"));
  moe.def("ll_pack", &ll_pack, py::arg("parts"), py::arg("token_of"), py::arg("n_rows"), py::arg("per_expert"),
          py::arg("R"), py::arg("E_loc"), py::arg("me"), py::arg("hdr"), py::arg("rb"), py::arg("staging"),
          py::arg("staging_bytes"), py::arg("own"), py::arg("own_bytes"));
  moe.def("ll_unpack", &ll_unpack, py::arg("landing"), py::arg("landing_bytes"), py::arg("base"), py::arg("R"),
          py::arg("E_loc"), py::arg("hdr"), py::arg("slot"), py::arg("rb"), py::arg("M"), py::arg("parts"),
          py::arg("recv_count"));
  moe.def("weighted_rows", &weighted_rows, py::arg("out"), py::arg("grid"), py::arg("grid_rows"),
          py::arg("row_bytes"), py::arg("bf16"), py::arg("back"), py::arg("weights"), py::arg("T"), py::arg("k"),
          py::arg("H"));
}

}  // namespace uccl::python
