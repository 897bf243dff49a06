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

void stream_store(void* dst, const void* src, size_t bytes) {
#if defined(__x86_64__)
  auto* d = static_cast<char*>(dst);
  auto* s = static_cast<const char*>(src);
  size_t head = (16 - (reinterpret_cast<uintptr_t>(d) & 15)) & 15;  // align the stores
  if (head > bytes) head = bytes;
  std::memcpy(d, s, head);
  d += head, s += head, bytes -= head;
  size_t i = 0;
  for (; i + 64 <= bytes; i += 64) {
    __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 16));
    __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 32));
    __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 48));
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i), a);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 16), b);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 32), c);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 48), e);
  }
  std::memcpy(d + i, s + i, bytes - i);
#else
  std::memcpy(dst, src, bytes);
#endif
}

}  // namespace uccl
