// What the harnesses share: a property check a fuzzer counts as a crash, and the
// reader/writer of their input format (fields in order from the front, host byte
// order; past the end every field reads as zero), so that make_corpus.cc can
// write valid inputs that the harnesses read back field for field.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

// Aborts (a finding) naming the property that failed.
#define FUZZ_CHECK(cond)                                                                   \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::fprintf(stderr, "fuzz property failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      std::abort();                                                                        \
    }                                                                                      \
  } while (0)

namespace uccl::fuzz {

class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  template <class T>
  T take() {
    T v{};
    const size_t n = std::min(sizeof(T), size_ - pos_);
    if (n) std::memcpy(&v, data_ + pos_, n);
    pos_ += n;
    return v;
  }
  // A value in [lo, hi].
  uint64_t in_range(uint64_t lo, uint64_t hi) {
    const uint64_t span = hi - lo;
    const uint64_t v = span < 256 ? take<uint8_t>() : span < 65536 ? take<uint16_t>() : take<uint64_t>();
    return span == ~0ull ? v : lo + v % (span + 1);
  }
  std::vector<char> bytes(size_t n) {
    n = std::min(n, size_ - pos_);
    std::vector<char> out(data_ + pos_, data_ + pos_ + n);
    pos_ += n;
    return out;
  }
  size_t remaining() const { return size_ - pos_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Writes what ByteReader reads (make_corpus.cc).
class ByteWriter {
 public:
  template <class T>
  ByteWriter& put(const T& v) {
    out_.append(reinterpret_cast<const char*>(&v), sizeof(v));
    return *this;
  }
  // The field ByteReader::in_range(lo, hi) reads as `v`.
  ByteWriter& in_range(uint64_t lo, uint64_t hi, uint64_t v) {
    const uint64_t span = hi - lo, x = v - lo;
    if (span < 256) return put(uint8_t(x));
    if (span < 65536) return put(uint16_t(x));
    return put(uint64_t(x));
  }
  ByteWriter& bytes(const void* p, size_t n) {
    out_.append(static_cast<const char*>(p), n);
    return *this;
  }
  const std::string& str() const { return out_; }

 private:
  std::string out_;
};

}  // namespace uccl::fuzz
