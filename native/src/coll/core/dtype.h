// Element types and reduction operators the collectives understand.
#pragma once
#include <cstddef>
#include <cstdint>

namespace uccl {

enum class DataType : uint8_t { Int8, Uint8, Int32, Int64, Float16, BFloat16, Float32, Float64, Bool };
enum class ReduceOp : uint8_t { Sum, Prod, Min, Max, Avg };

inline size_t dtype_size(DataType t) {
  switch (t) {
    case DataType::Int8:
    case DataType::Uint8:
    case DataType::Bool: return 1;
    case DataType::Float16:
    case DataType::BFloat16: return 2;
    case DataType::Int32:
    case DataType::Float32: return 4;
    case DataType::Int64:
    case DataType::Float64: return 8;
  }
  return 1;
}

const char* dtype_name(DataType t);
const char* op_name(ReduceOp op);

}  // namespace uccl
