#include "common/stream_copy.h"

#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <emmintrin.h>  // SSE2: part of every x86-64 CPU
#endif

namespace uccl {

void copy_out(void* dst, const void* src, size_t bytes, size_t call_output_bytes) {
  if (call_output_bytes >= kStreamOutputMin)
    stream_copy(dst, src, bytes);
  else
    std::memcpy(dst, src, bytes);
}

void move_out(void* dst, const void* src, size_t bytes, size_t call_output_bytes) {
  auto* d = static_cast<char*>(dst);
  auto* s = static_cast<const char*>(src);
  if (d < s + bytes && s < d + bytes)
    std::memmove(dst, src, bytes);
  else
    copy_out(dst, src, bytes, call_output_bytes);
}

void stream_copy(void* dst, const void* src, size_t bytes) {
  stream_store(dst, src, bytes);
  stream_fence();
}

void stream_fence() {
#if defined(__x86_64__)
  _mm_sfence();  // streamed stores are weakly ordered: publish them before returning
#endif
}

namespace {
#if defined(__x86_64__)
inline void stream_line(char* d, const char* s) {
  __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
  __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 16));
  __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 32));
  __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 48));
  _mm_stream_si128(reinterpret_cast<__m128i*>(d), a);
  _mm_stream_si128(reinterpret_cast<__m128i*>(d + 16), b);
  _mm_stream_si128(reinterpret_cast<__m128i*>(d + 32), c);
  _mm_stream_si128(reinterpret_cast<__m128i*>(d + 48), e);
}

// Loads that run ahead of earlier stores by a little under a multiple of 4 KiB
// look to the CPU like reads of the bytes being stored (4K aliasing: it compares
// only the low 12 address bits) and wait for them. A forward copy hits that on
// every line when dst lies just above src modulo 4 KiB, and user buffers are
// only 16-byte aligned, so some outputs land there (docs/DESIGN.md, "Measured
// reasons"). Such a copy runs backwards, where the same distance never aliases.
constexpr uintptr_t kAliasWindow = 512;
#endif
}  // namespace

void stream_store(void* dst, const void* src, size_t bytes) {
#if defined(__x86_64__)
  auto* d = static_cast<char*>(dst);
  auto* s = static_cast<const char*>(src);
  size_t head = (16 - (reinterpret_cast<uintptr_t>(d) & 15)) & 15;  // align the stores
  if (head > bytes) head = bytes;
  std::memcpy(d, s, head);
  d += head, s += head, bytes -= head;
  const size_t lines = bytes / 64;
  std::memcpy(d + lines * 64, s + lines * 64, bytes - lines * 64);
  const uintptr_t ahead = (reinterpret_cast<uintptr_t>(d) - reinterpret_cast<uintptr_t>(s)) & 4095;
  if (ahead != 0 && ahead < kAliasWindow) {
    for (size_t i = lines; i-- > 0;) stream_line(d + i * 64, s + i * 64);
  } else {
    for (size_t i = 0; i < lines; ++i) stream_line(d + i * 64, s + i * 64);
  }
#else
  std::memcpy(dst, src, bytes);
#endif
}

}  // namespace uccl
