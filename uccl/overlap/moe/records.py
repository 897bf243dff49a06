"""Row records: a token's payload parts, its local top-k ids and weights, packed into one
byte row so that one write moves a token with everything the receiver needs."""

from __future__ import annotations

import torch

from uccl.errors import InvalidArgumentError

PAYLOAD_DTYPES = [torch.float32, torch.bfloat16, torch.float16]
for _name in ("float8_e4m3fn", "float8_e5m2"):
    if hasattr(torch, _name):  # fp8 where this torch has it
        PAYLOAD_DTYPES.append(getattr(torch, _name))
_CODES = {dt: i + 1 for i, dt in enumerate(PAYLOAD_DTYPES)}


def align8(n: int) -> int:
    return (n + 7) // 8 * 8


def dtype_code(rank: int, op: str, parts: list) -> int:
    """One int naming the dtypes of the payload parts (compared across ranks)."""
    code = 0
    for p in parts:
        if p.dtype not in _CODES:
            raise InvalidArgumentError(f"rank {rank}: {op}: payload dtype {p.dtype} is not supported "
                                       f"(supported: {', '.join(map(str, PAYLOAD_DTYPES))})")
        code = code * 16 + _CODES[p.dtype]
    return code


class RecordLayout:
    """Byte layout of a row: each part (width x dtype), then k int64 ids, then k float32 weights."""

    def __init__(self, parts_meta: list, k: int, ids: bool = True) -> None:
        self.parts_meta = parts_meta  # [(width, dtype)]
        self.k = k
        offsets, off = [], 0
        for width, dtype in parts_meta:
            offsets.append(off)
            off += align8(width * dtype.itemsize)
        self.part_offsets = offsets
        self.ids_offset = off
        off += 8 * k if ids else 0
        self.weights_offset = off
        off += align8(4 * k)
        self.row_bytes = max(8, off)
        self.has_ids = ids

    @classmethod
    def of(cls, parts: list, k: int, ids: bool = True) -> "RecordLayout":
        return cls([(p.shape[1], p.dtype) for p in parts], k, ids)

    def _field(self, rows: torch.Tensor, off: int, nbytes: int, dtype: torch.dtype) -> torch.Tensor:
        return rows[:, off:off + nbytes].view(dtype)

    def part(self, rows: torch.Tensor, i: int) -> torch.Tensor:
        width, dtype = self.parts_meta[i]
        return self._field(rows, self.part_offsets[i], width * dtype.itemsize, dtype)

    def ids(self, rows: torch.Tensor) -> torch.Tensor:
        return self._field(rows, self.ids_offset, 8 * self.k, torch.int64)

    def weights(self, rows: torch.Tensor) -> torch.Tensor:
        return self._field(rows, self.weights_offset, 4 * self.k, torch.float32)

    def rows(self, buf: torch.Tensor, start: int, count: int) -> torch.Tensor:
        """Rows [start, start+count) of a flat uint8 buffer, as [count, row_bytes]."""
        return buf[start * self.row_bytes:(start + count) * self.row_bytes].view(count, self.row_bytes)

    def pack(self, rows: torch.Tensor, parts: list, index: torch.Tensor, ids=None, weights=None) -> None:
        """rows[i] = record of token index[i]."""
        for i, p in enumerate(parts):
            gather_rows(self.part(rows, i), p, index)
        if self.k:
            if ids is not None and self.has_ids:
                self.ids(rows).copy_(ids[index])
            if weights is not None:
                self.weights(rows).copy_(weights[index])
            else:
                self.weights(rows).zero_()


def gather_rows(dst: torch.Tensor, src: torch.Tensor, index: torch.Tensor) -> None:
    """dst[i] = src[index[i]], in one pass where dst is contiguous (a record of one part)."""
    if dst.is_contiguous() and dst.dtype == src.dtype:
        torch.index_select(src, 0, index, out=dst)
    else:
        dst.copy_(src.index_select(0, index))


def check_payload(rank: int, op: str, x) -> list:
    parts = list(x) if isinstance(x, (tuple, list)) else [x]
    for p in parts:
        if not isinstance(p, torch.Tensor) or p.dim() != 2:
            raise InvalidArgumentError(f"rank {rank}: {op}: x must be a [tokens, hidden] tensor "
                                       f"(or a tuple of them for fp8 with scales)")
        if p.shape[0] != parts[0].shape[0]:
            raise InvalidArgumentError(f"rank {rank}: {op}: payload parts have different token counts")
    return [p.detach().cpu().contiguous() if p.device.type != "cpu" else p.detach().contiguous() for p in parts]
