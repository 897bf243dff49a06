// Fuzzes the decoding of a received datagram (packet.h: decode_packet, decode_data,
// ack_length_ok) and the helpers that read an ack's fields (bits_from, widen32):
// no read past the datagram, and a decoded header always describes bytes that lie
// inside its operation.
#include <cstring>

#include "fuzz_support.h"
#include "transport/net/packet.h"

using namespace uccl::net;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 70000) return 0;  // a datagram is at most 64 KB
  // An exact-size copy: ASan reports any read past the datagram's end.
  char* pkt = new char[size ? size : 1];
  if (size) std::memcpy(pkt, data, size);
  DataHeader h;
  AckHeader a;
  uint32_t payload = 0;
  switch (decode_packet(pkt, uint32_t(size), &h, &payload, &a)) {
    case Parsed::kData:
      FUZZ_CHECK(payload + sizeof(DataWire) == size);
      if (carries_c(h.op)) {
        FUZZ_CHECK(payload == 0 && h.total == 0 && h.frag_off == 0);
      } else {
        FUZZ_CHECK(h.frag_off <= h.total && payload <= h.total - h.frag_off);  // inside the operation
        if (!(h.flags & kFlagLast)) FUZZ_CHECK(payload > 0 && h.frag_off + payload < h.total);
      }
      break;
    case Parsed::kAck: {
      FUZZ_CHECK(ack_length_ok(size));
      FUZZ_CHECK(ack_length(a) <= size);  // a re-encoded ack is never longer than what came in
      std::array<uint64_t, kSackWords> words;
      std::memcpy(words.data(), a.sack, sizeof(a.sack));
      const uint64_t off = a.echo_seq % (kWindow + 128);
      const uint64_t bits = bits_from(words, off);
      if (off % 64 == 0 && off / 64 < kSackWords) FUZZ_CHECK(bits == words[off / 64]);
      if (off >= kWindow) FUZZ_CHECK(bits == 0);
      // Widening stays within 2^31 of the reference (or clamps at zero).
      const uint64_t ref = a.cum_ack >> 1;
      const uint64_t wide = widen32(uint32_t(a.rejects), ref);
      FUZZ_CHECK(uint32_t(wide) == uint32_t(a.rejects) || wide == 0);
      FUZZ_CHECK(wide == 0 || (wide > ref ? wide - ref : ref - wide) <= (1ull << 31));
      break;
    }
    case Parsed::kMalformed:
      break;
  }
  delete[] pkt;
  return 0;
}
