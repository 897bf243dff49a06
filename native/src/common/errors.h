// Error types thrown by the native core; python/module.cc maps each to a Python exception.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace uccl {

enum class ErrorKind { Generic, Timeout, PeerFailure, Access, Argument, Mismatch };

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& msg) : std::runtime_error(msg), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

// Builds "rank R: OP: cause" messages from stream-able parts.
template <typename... Parts>
std::string format_msg(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}

template <typename... Parts>
[[noreturn]] void raise(ErrorKind kind, const Parts&... parts) {
  throw Error(kind, format_msg(parts...));
}

}  // namespace uccl
