// Reads. The requester sends a kOpReadReq operation (a = key, b = offset,
// c = length; no payload). The server answers it once it is released in
// operation order: a kOpReadResp operation (a = the request's msg id) whose
// payload is sent straight from the region, or a refusal (refusal.h). The
// requester copies the response into its destination and completes the read
// when every byte is there and the request itself is acknowledged.
#pragma once
#include <cstdint>
#include <memory>

#include "transport/net/flow/tx_op.h"
#include "transport/region_table.h"

namespace uccl::net {

// The answer to the peer's read request `req_msg_id`: a response, or a refusal (kOpError).
std::unique_ptr<TxOp> serve_read(const RegionTable& table, uint64_t key, uint64_t off, uint64_t len,
                                 uint64_t req_msg_id);

enum class ResponsePart { kBad, kPartial, kLast };
// Places one packet of a response to `req` (may be null); kBad when it does not
// answer `req`, kLast when it brought the response's last bytes.
ResponsePart place_read_response(TxOp* req, uint64_t total, uint64_t frag_off, const char* payload, uint32_t len);

}  // namespace uccl::net
