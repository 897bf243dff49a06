#include "transport/net/flow/read_protocol.h"

#include <cstring>

#include "transport/net/flow/refusal.h"

namespace uccl::net {

std::unique_ptr<TxOp> serve_read(const RegionTable& table, uint64_t key, uint64_t off, uint64_t len,
                                 uint64_t req_msg_id) {
  const auto r = table.lookup(key);
  if (const uint64_t code = check_access(r, kRemoteRead, off, len)) return refusal(req_msg_id, code, r ? r->len : 0);
  auto resp = std::make_unique<TxOp>();
  resp->kind = kOpReadResp;
  resp->internal = true;
  resp->src = reinterpret_cast<const char*>(r->addr + off);
  resp->len = len;
  resp->a = req_msg_id;
  return resp;
}

ResponsePart place_read_response(TxOp* req, uint64_t total, uint64_t frag_off, const char* payload, uint32_t len) {
  if (!req || req->kind != kOpReadReq || req->failed || total != req->c) return ResponsePart::kBad;
  if (len) std::memcpy(req->read_dst + frag_off, payload, len);
  req->read_got += len;
  if (req->read_got != req->c) return ResponsePart::kPartial;
  req->read_done = true;
  return ResponsePart::kLast;
}

}  // namespace uccl::net
