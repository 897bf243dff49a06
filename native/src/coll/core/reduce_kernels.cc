#include "coll/core/reduce_kernels.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "common/errors.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define UCCL_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define UCCL_MULTIVERSION
#endif

namespace uccl {

const char* dtype_name(DataType t) {
  static const char* names[] = {"int8", "uint8", "int32", "int64", "float16", "bfloat16", "float32", "float64", "bool"};
  return names[int(t)];
}

const char* op_name(ReduceOp op) {
  static const char* names[] = {"sum", "prod", "min", "max", "avg"};
  return names[int(op)];
}

namespace {

struct Sum {
  template <typename T>
  static T apply(T a, T b) { return a + b; }
};
struct Prod {
  template <typename T>
  static T apply(T a, T b) { return a * b; }
};
struct Min {
  template <typename T>
  static T apply(T a, T b) { return b < a ? b : a; }
};
struct Max {
  template <typename T>
  static T apply(T a, T b) { return a < b ? b : a; }
};
struct Or {  // bool sum/max
  template <typename T>
  static T apply(T a, T b) { return T(a | b); }
};
struct And {  // bool prod/min
  template <typename T>
  static T apply(T a, T b) { return T(a & b); }
};

// Plain loops the compiler vectorizes; target_clones builds an AVX2 copy too.
template <typename T, typename Op>
UCCL_MULTIVERSION void loop(T* dst, const T* a, const T* b, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = Op::apply(a[i], b[i]);
}

// bfloat16 <-> float32: the top half of a float, rounded to nearest even.
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // keep NaN a NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

template <typename Op>
UCCL_MULTIVERSION void loop_bf16(uint16_t* dst, const uint16_t* a, const uint16_t* b, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(Op::apply(bf16_to_f32(a[i]), bf16_to_f32(b[i])));
}

// IEEE half <-> float32 without hardware help (the fallback path).
inline float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: renormalize
      exp = 127 - 15 + 1;
      while (!(mant & 0x400u)) {
        mant <<= 1;
        --exp;
      }
      u = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000u;
  int32_t exp = int32_t((u >> 23) & 0xffu) - 127 + 15;
  uint32_t mant = u & 0x7fffffu;
  if (((u >> 23) & 0xffu) == 0xffu) return uint16_t(sign | 0x7c00u | (mant ? 0x200u : 0));
  if (exp >= 31) return uint16_t(sign | 0x7c00u);
  if (exp <= 0) {
    if (exp < -10) return uint16_t(sign);
    mant |= 0x800000u;
    uint32_t shift = uint32_t(14 - exp);
    uint32_t half = mant >> shift, rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1u))) ++half;
    return uint16_t(sign | half);
  }
  uint32_t half = sign | (uint32_t(exp) << 10) | (mant >> 13), rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) ++half;  // may carry into the exponent: correct
  return uint16_t(half);
}

template <typename Op>
void loop_f16_portable(uint16_t* dst, const uint16_t* a, const uint16_t* b, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = f32_to_f16(Op::apply(f16_to_f32(a[i]), f16_to_f32(b[i])));
}

#if defined(__x86_64__)
template <typename Op>
__m256 apply_ps(__m256 x, __m256 y);
template <>
__attribute__((target("avx2,f16c"))) inline __m256 apply_ps<Sum>(__m256 x, __m256 y) { return _mm256_add_ps(x, y); }
template <>
__attribute__((target("avx2,f16c"))) inline __m256 apply_ps<Prod>(__m256 x, __m256 y) { return _mm256_mul_ps(x, y); }
template <>
__attribute__((target("avx2,f16c"))) inline __m256 apply_ps<Min>(__m256 x, __m256 y) { return _mm256_min_ps(y, x); }
template <>
__attribute__((target("avx2,f16c"))) inline __m256 apply_ps<Max>(__m256 x, __m256 y) { return _mm256_max_ps(y, x); }

template <typename Op>
__attribute__((target("avx2,f16c"))) void loop_f16_f16c(uint16_t* dst, const uint16_t* a, const uint16_t* b,
                                                        size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 x = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i)));
    __m256 y = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(apply_ps<Op>(x, y), _MM_FROUND_TO_NEAREST_INT));
  }
  loop_f16_portable<Op>(dst + i, a + i, b + i, n - i);
}

bool cpu_has_f16c() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  return yes;
}
#endif

template <typename Op>
void loop_f16(uint16_t* dst, const uint16_t* a, const uint16_t* b, size_t n) {
#if defined(__x86_64__)
  if (cpu_has_f16c()) return loop_f16_f16c<Op>(dst, a, b, n);
#endif
  loop_f16_portable<Op>(dst, a, b, n);
}

template <typename Op>
void dispatch_type(void* dst, const void* a, const void* b, size_t n, DataType t) {
  switch (t) {
    case DataType::Int8: return loop<int8_t, Op>((int8_t*)dst, (const int8_t*)a, (const int8_t*)b, n);
    case DataType::Uint8: return loop<uint8_t, Op>((uint8_t*)dst, (const uint8_t*)a, (const uint8_t*)b, n);
    case DataType::Int32: return loop<int32_t, Op>((int32_t*)dst, (const int32_t*)a, (const int32_t*)b, n);
    case DataType::Int64: return loop<int64_t, Op>((int64_t*)dst, (const int64_t*)a, (const int64_t*)b, n);
    case DataType::Float32: return loop<float, Op>((float*)dst, (const float*)a, (const float*)b, n);
    case DataType::Float64: return loop<double, Op>((double*)dst, (const double*)a, (const double*)b, n);
    case DataType::Float16: return loop_f16<Op>((uint16_t*)dst, (const uint16_t*)a, (const uint16_t*)b, n);
    case DataType::BFloat16: return loop_bf16<Op>((uint16_t*)dst, (const uint16_t*)a, (const uint16_t*)b, n);
    case DataType::Bool: break;
  }
}

template <typename T>
UCCL_MULTIVERSION void divide(T* x, size_t n, int d) {
  for (size_t i = 0; i < n; ++i) x[i] = T(x[i] / T(d));
}

}  // namespace

void reduce(void* dst, const void* a, const void* b, size_t count, DataType t, ReduceOp op) {
  if (t == DataType::Bool) {  // logical: sum/max = or, prod/min = and
    bool is_or = op == ReduceOp::Sum || op == ReduceOp::Max || op == ReduceOp::Avg;
    if (is_or) return loop<uint8_t, Or>((uint8_t*)dst, (const uint8_t*)a, (const uint8_t*)b, count);
    return loop<uint8_t, And>((uint8_t*)dst, (const uint8_t*)a, (const uint8_t*)b, count);
  }
  switch (op) {
    case ReduceOp::Sum:
    case ReduceOp::Avg: return dispatch_type<Sum>(dst, a, b, count, t);
    case ReduceOp::Prod: return dispatch_type<Prod>(dst, a, b, count, t);
    case ReduceOp::Min: return dispatch_type<Min>(dst, a, b, count, t);
    case ReduceOp::Max: return dispatch_type<Max>(dst, a, b, count, t);
  }
}

void scale_by_inverse(void* x, size_t n, DataType t, int d) {
  switch (t) {
    case DataType::Int8: return divide((int8_t*)x, n, d);
    case DataType::Uint8: return divide((uint8_t*)x, n, d);
    case DataType::Int32: return divide((int32_t*)x, n, d);
    case DataType::Int64: return divide((int64_t*)x, n, d);
    case DataType::Float32: return divide((float*)x, n, d);
    case DataType::Float64: return divide((double*)x, n, d);
    case DataType::Float16: {
      auto* h = static_cast<uint16_t*>(x);
      for (size_t i = 0; i < n; ++i) h[i] = f32_to_f16(f16_to_f32(h[i]) / float(d));
      return;
    }
    case DataType::BFloat16: {
      auto* h = static_cast<uint16_t*>(x);
      for (size_t i = 0; i < n; ++i) h[i] = f32_to_bf16(bf16_to_f32(h[i]) / float(d));
      return;
    }
    case DataType::Bool: raise(ErrorKind::Argument, "avg is not defined for bool");
  }
}

}  // namespace uccl
