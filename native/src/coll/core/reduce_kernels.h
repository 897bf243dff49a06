// Element-wise reduction kernels: dst[i] = a[i] (op) b[i]. Vectorized for AVX2
// (F16C for float16) where the CPU has it, with a portable fallback; float16 and
// bfloat16 are computed in float32. dst may alias a or b.
#pragma once
#include <cstddef>

#include "coll/core/dtype.h"

namespace uccl {

// Avg reduces as Sum; the caller divides once at the end (scale_by_inverse).
void reduce(void* dst, const void* a, const void* b, size_t count, DataType t, ReduceOp op);
// x[i] /= divisor (integers: truncating division, like torch).
void scale_by_inverse(void* x, size_t count, DataType t, int divisor);

}  // namespace uccl
