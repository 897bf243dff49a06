// Fuzzes the refusal and read protocols (refusal.h, read_protocol.h) with the
// fields of a peer's packet: the access check never admits bytes outside a
// region, a served read never points outside it, a read response never lands
// outside the request's destination, and every error message can be built.
// Input: region length, flags, the operation's key/offset/length/access, a msg id,
// the requester's kind, then response packets (total, index, last?, payload) to the end.
#include <cstring>
#include <memory>
#include <vector>

#include "fuzz_support.h"
#include "transport/net/flow/read_protocol.h"
#include "transport/net/flow/refusal.h"
#include "transport/net/packet.h"

using namespace uccl;
using namespace uccl::net;
using namespace uccl::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ByteReader in(data, size);
  RegionSlot slots[4] = {};
  RegionTable table(slots, 4, true);
  const size_t region_len = in.in_range(0, 4096);
  std::vector<char> region(region_len);
  const uint32_t flags = uint32_t(in.in_range(0, 3));
  const uint64_t key = table.add(uint64_t(region.data()), region_len, flags);

  // The peer's operation, as its packet's fields (a small key names the region).
  uint64_t a = in.take<uint64_t>();
  if (a < 2) a = a ? key : key ^ (1ull << 40);  // the region, or a stale key for its slot
  const uint64_t off = in.take<uint64_t>() >> in.in_range(0, 63);
  const uint64_t len = in.take<uint64_t>() >> in.in_range(0, 63);
  const uint32_t access = (in.take<uint8_t>() & 1) ? kRemoteWrite : kRemoteRead;

  const auto r = table.lookup(a);
  const uint64_t code = check_access(r, access, off, len);
  if (code == 0) {
    FUZZ_CHECK(r && r->key == key && (r->flags & access));
    FUZZ_CHECK(off <= region_len && len <= region_len - off);
  } else {
    FUZZ_CHECK(code == kErrNoKey || code == kErrNoWriteAccess || code == kErrNoReadAccess || code == kErrBounds);
  }

  const uint64_t msg = in.take<uint64_t>();
  auto answer = serve_read(table, a, off, len, msg);
  if (answer->kind == kOpReadResp) {
    FUZZ_CHECK(answer->src >= region.data() && answer->len <= region_len &&
               answer->src + answer->len <= region.data() + region_len);
  } else {
    FUZZ_CHECK(answer->kind == kOpError && answer->a == msg);
    TxOp refused;  // the requester's message for it
    refused.kind = (in.take<uint8_t>() & 1) ? kOpReadReq : kOpWrite;
    refused.a = a;
    refused.b = off;
    refused.c = refused.len = len;
    FUZZ_CHECK(!refusal_message(refused, answer->b, answer->c, 0, 1).empty());
    FUZZ_CHECK(!refusal_message(refused, in.take<uint64_t>(), answer->c, 0, 1).empty());
  }

  // Response packets for a read request of `want` bytes, as decode_data leaves them.
  const uint64_t want = in.in_range(0, 4096);
  auto dst = std::make_unique<char[]>(want ? want : 1);
  TxOp req;
  req.kind = (in.take<uint8_t>() & 1) ? kOpReadReq : kOpWrite;
  req.c = want;
  req.read_dst = dst.get();
  while (in.remaining()) {
    DataWire w{};
    w.op = kOpReadResp;
    w.total = (in.take<uint8_t>() & 1) ? want : in.take<uint64_t>() >> in.in_range(0, 63);
    w.index = in.take<uint32_t>();
    w.flags = (in.take<uint8_t>() & 1) ? kFlagLast : 0;
    const std::vector<char> payload = in.bytes(in.in_range(0, 1500));
    DataHeader h;
    if (!decode_data(w, uint32_t(payload.size()), &h)) continue;
    const ResponsePart part = place_read_response(&req, h.total, h.frag_off, payload.data(), uint32_t(payload.size()));
    if (part == ResponsePart::kLast) FUZZ_CHECK(req.read_done);
  }
  return 0;
}
