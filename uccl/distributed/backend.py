"""ProcessGroupUCCL: torch.distributed's process group over uccl.collectives.

A thin adapter. Each method checks its arguments the way gloo does (same exception
types, messages in gloo's words), maps tensors onto host buffers (uccl.distributed.
cuda_staging) and calls exactly one Communicator operation (or one per tensor for the
coalesced variants). No algorithm lives here.

Ordering: uccl runs a group's operations in issue order. CPU operations are issued on the
caller's thread. CUDA operations are issued by a per-group thread once their
device-to-host copies finish; while any is queued there, CPU operations queue behind it,
so every rank issues in the same (program) order.
"""

from __future__ import annotations

import dataclasses
import datetime
import queue
import threading
import time
from typing import Any, Callable, Optional, Sequence

import torch

from uccl.config import Config
from uccl.distributed import _compat, torch_patches
from uccl.distributed._compat import (ALIASES, ProcessGroup, init_process_group_base, is_async, op_timeout,
                                      red_op_name, timedelta_seconds)
from uccl.distributed._compat import c10d_native as _c10d
from uccl.distributed.cuda_staging import Stage
from uccl.distributed.names import BACKEND_NAME
from uccl.distributed.work import Completer, UcclWork, _as_runtime
from uccl.errors import PeerFailureError, UcclTimeoutError


_NATIVE = frozenset({torch.int8, torch.uint8, torch.int32, torch.int64, torch.float16, torch.bfloat16,
                     torch.float32, torch.float64, torch.bool})
_INTEGRAL = frozenset({torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool})
_OPS = {"SUM": "sum", "PRODUCT": "prod", "MIN": "min", "MAX": "max", "AVG": "avg"}
_USER_TAG_LIMIT = 1 << 62          # user tags live below; uccl's own (monitored_barrier) above
_TAG_MONITORED = 1 << 62
_ANY = None  # set lazily: uccl's ANY_SOURCE


def _move(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """A contiguous host tensor as uccl sees it for data movement: its own dtype where uccl
    has it, else its bytes. Returns (tensor, uccl elements per torch element)."""
    if t.dtype in _NATIVE:
        return t, 1
    return t.reshape(-1).view(torch.uint8), t.element_size()


def _err(what: str, msg: str) -> RuntimeError:
    return RuntimeError(f"ProcessGroupUCCL::{what}: {msg}")


def _as_list(tensors) -> list:
    return [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)


def _opts(opts, cls, field: Optional[str] = None):
    """torch passes an options object; the old direct-call overloads pass a ReduceOp or a root."""
    if opts is None:
        return cls()
    if isinstance(opts, cls) or field is None:
        return opts
    o = cls()
    if field == "reduceOp":
        o.reduceOp = opts if isinstance(opts, _compat.ReduceOp) else _compat.ReduceOp(opts)
    else:
        setattr(o, field, int(opts))
    return o


class _Options:
    """What `_get_backend(device).options` gives split_group (deep-copied by torch)."""

    def __init__(self, timeout: datetime.timedelta) -> None:
        self._timeout = timeout
        self.global_ranks_in_group: list = []
        self.group_name = ""


class _BackendView:
    """What torch's helpers expect from `pg._get_backend(device)` for a group whose
    backend is the group itself (Python process groups have no C++ backend)."""

    supports_splitting = True
    supports_coalescing = False

    def __init__(self, pg: "ProcessGroupUCCL") -> None:
        self._pg = pg
        self.options = _Options(datetime.timedelta(seconds=pg._timeout))

    def name(self) -> str:
        return BACKEND_NAME

    def rank(self) -> int:
        return self._pg.rank()

    def size(self) -> int:
        return self._pg.size()

    def _set_sequence_number_for_group(self) -> None:
        pass

    def perform_nocolor_split(self, device=None) -> None:
        pass  # uccl groups form through the store; non-members need not take part

    def comm_split_count(self) -> int:
        return self._pg._splits


class ProcessGroupUCCL(ProcessGroup):
    """torch.distributed process group running every operation on uccl.collectives."""

    def __init__(self, store, rank: int, size: int, timeout: Any = datetime.timedelta(minutes=30),
                 group_id: str = "", global_ranks: Optional[Sequence[int]] = None, comm=None,
                 config: Optional[Config] = None) -> None:
        init_process_group_base(self, store, rank, size)
        self._store = store
        self._timeout = timedelta_seconds(timeout, 1800.0)
        self._group_id = str(group_id)
        self._group_name, self._group_desc = self._group_id, "undefined"
        self._global_ranks = list(global_ranks or range(size))
        if comm is None:
            from uccl.collectives import Communicator
            from uccl.transport.bootstrap import StoreBootstrap

            cfg = dataclasses.replace(config or Config.from_env(), timeout=self._timeout)
            comm = Communicator(StoreBootstrap(store, rank, size, prefix="uccl"), cfg,
                                world_ranks=self._global_ranks)
        self._comm = comm
        self._completer = Completer(f"uccl-pg{self._group_id}")
        self._issue_q: Optional[queue.SimpleQueue] = None
        self._issue_thread: Optional[threading.Thread] = None
        self._issue_lock = threading.Lock()
        self._pending = 0
        self._monitored = 0
        self._splits = 0
        self._orphans: list = []  # requests abandoned by a failed monitored_barrier (buffers stay alive)
        self._closed = False
        self._done_work = UcclWork.completed("done", [])
        torch_patches.install_monitored_barrier(ProcessGroupUCCL)

    @classmethod
    def from_backend_options(cls, dist_opts, backend_options=None) -> "ProcessGroupUCCL":
        """The creator torch calls (register_backend(..., extended_api=True))."""
        return cls(dist_opts.store, dist_opts.group_rank, dist_opts.group_size, dist_opts.timeout,
                   group_id=getattr(dist_opts, "group_id", ""),
                   global_ranks=list(getattr(dist_opts, "global_ranks_in_group", []) or []))

    # -- identity ---------------------------------------------------------------------------
    def getBackendName(self) -> str:
        return BACKEND_NAME

    def name(self) -> str:
        return BACKEND_NAME

    _get_backend_name = name

    @property
    def _device_types(self) -> list:
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])

    # Python process groups have no C++ backend to keep these in.
    def _set_group_name(self, name: str) -> None:
        self._group_name = str(name)

    @property
    def group_name(self) -> str:
        return self._group_name

    def _set_group_desc(self, desc: str) -> None:
        self._group_desc = str(desc)

    @property
    def group_desc(self) -> str:
        return self._group_desc

    def _get_backend(self, device=None) -> _BackendView:
        return _BackendView(self)

    def __repr__(self) -> str:
        return f"ProcessGroupUCCL(rank={self.rank()}, size={self.size()})"

    @property
    def communicator(self):
        """The uccl Communicator underneath (for uccl-specific features)."""
        return self._comm

    # -- issuing ----------------------------------------------------------------------------
    def _submit(self, what: str, stage: Stage, issue: Callable[[bool], list], result: Any, opts: Any = None,
                blocking_ok: bool = True) -> UcclWork:
        timeout = op_timeout(opts, self._timeout)
        if stage.device is None and self._pending == 0:
            stage.stage_in()
            try:
                if blocking_ok and not is_async(opts):
                    issue(False)
                    stage.stage_out()
                    return UcclWork.completed(what, result)
                handles = issue(True)
            except RuntimeError:
                raise
            except Exception as exc:  # errors reach users as RuntimeErrors, as gloo's do
                raise _as_runtime(exc, f"rank {self.rank()}: {what}") from exc
            return UcclWork(what, result, handles, stage.stage_out if stage.post else None, timeout,
                            self._completer)
        # CUDA (or CPU behind queued CUDA work): issued from the group's thread.
        stage.stage_in()
        issued = threading.Event()
        cuda = stage.device is not None
        devices = [stage.device] if cuda else None
        work = UcclWork(what, result, (), stage.stage_out, timeout, self._completer, issued, devices,
                        stage.sync_consumer if cuda else None, stage.on_copy_stream if cuda else None)

        def run() -> None:
            try:
                stage.wait_in()
                work._attach(issue(True))
            except BaseException as exc:  # surfaces at wait()
                work._fail(exc)
            finally:
                issued.set()

        self._enqueue(run)
        if cuda:
            self._completer.submit(work)  # copies back as soon as it is done, waited on or not
        return work

    def _enqueue(self, fn: Callable[[], None]) -> None:
        with self._issue_lock:
            if self._issue_q is None:
                self._issue_q = queue.SimpleQueue()
                self._issue_thread = threading.Thread(target=self._issue_loop, args=(self._issue_q,), daemon=True,
                                                      name=f"uccl-issue{self._group_id}")
                self._issue_thread.start()
            self._pending += 1
        self._issue_q.put(fn)

    def _issue_loop(self, q: queue.SimpleQueue) -> None:
        while True:
            fn = q.get()
            if fn is None:
                return
            try:
                fn()
            finally:
                with self._issue_lock:
                    self._pending -= 1

    # -- checks -----------------------------------------------------------------------------
    def _single(self, tensors, what: str) -> torch.Tensor:
        tensors = _as_list(tensors)
        if len(tensors) != 1:
            raise _err(what, f"requires a single tensor, got {len(tensors)}")
        t = tensors[0]
        if t.layout != torch.strided:
            raise _err(what, "only dense (strided) tensors are supported")
        return t

    def _root(self, root: int, what: str) -> int:
        if not 0 <= root < self.size():
            raise _err(what, f"invalid root rank: {root}")
        return root

    def _reduction(self, dtype: torch.dtype, red, what: str) -> tuple[str, bool]:
        """(uccl op name, whether to reduce the real view of a complex tensor)."""
        name = red_op_name(red)
        if name == "PREMUL_SUM":
            raise RuntimeError("Cannot use ReduceOp.PREMUL_SUM with UCCL")
        if name in ("BAND", "BOR", "BXOR"):
            if dtype not in _INTEGRAL:
                raise RuntimeError(f"Cannot use ReduceOp.{name} with non-integral dtype")
            if dtype == torch.bool and name != "BXOR":
                return ("min" if name == "BAND" else "max"), False
            raise _err(what, f"ReduceOp.{name} on {dtype} is not supported by uccl's collectives")
        if dtype.is_complex:
            if name not in ("SUM", "AVG"):
                raise ValueError(f"{what} does not support {name} on complex tensors")
            return _OPS[name], True
        if dtype not in _NATIVE:
            raise RuntimeError(f"Invalid scalar type: uccl cannot reduce {dtype}")
        return _OPS[name], False

    @staticmethod
    def _rview(h: torch.Tensor, real: bool) -> torch.Tensor:
        return torch.view_as_real(h) if real else h

    def _same_type(self, tensors: Sequence[torch.Tensor], ref: torch.Tensor, what: str) -> None:
        for i, t in enumerate(tensors):
            if t.dtype != ref.dtype or t.device.type != ref.device.type:
                raise _err(what, f"invalid tensor type at index {i} (expected {ref.dtype} on {ref.device.type}, "
                                 f"got {t.dtype} on {t.device.type})")

    def _root_list(self, lists, t: torch.Tensor, root: int, what: str, side: str) -> list:
        """gather's outputs / scatter's inputs: the root's one list of a tensor per rank,
        like t (checked as gloo checks it); other ranks must pass none."""
        if self.rank() != root:
            if len(lists) and any(len(x) for x in lists):
                raise _err(what, f"requires empty {side} on non-root")
            return []
        if len(lists) != 1:
            raise _err(what, f"requires a single-element {side} list, got {len(lists)}")
        tensors = list(lists[0])
        if len(tensors) != self.size():
            raise _err(what, f"invalid {side} tensor list at index 0 (expected length {self.size()}, "
                             f"got {len(tensors)})")
        self._same_type(tensors, t, what)
        self._same_size(tensors, t.shape, what)
        return tensors

    def _same_size(self, tensors: Sequence[torch.Tensor], shape, what: str) -> None:
        for i, t in enumerate(tensors):
            if t.shape != shape:
                raise _err(what, f"invalid tensor size at index {i} (expected {tuple(shape)}, got {tuple(t.shape)})")

    # -- collectives ------------------------------------------------------------------------
    def _fast(self, opts, *tensors) -> bool:
        """A blocking call on contiguous host tensors with nothing queued: straight through
        (the frontend drops the returned work, so a shared completed one serves)."""
        if self._pending or getattr(opts, "asyncOp", True):
            return False
        for t in tensors:
            if not t.is_cpu or not t.is_contiguous():
                return False
        return True

    def allreduce(self, tensors, opts=None) -> UcclWork:
        opts = _opts(opts, _c10d.AllreduceOptions, "reduceOp")
        t = self._single(tensors, "allreduce")
        op, real = self._reduction(t.dtype, opts.reduceOp, "allreduce")
        if self._fast(opts, t):
            try:
                self._comm.all_reduce(torch.view_as_real(t) if real else t, op=op)
            except RuntimeError:
                raise
            except Exception as exc:
                raise _as_runtime(exc, f"rank {self.rank()}: allreduce") from exc
            return self._done_work
        stage = Stage.of((t,))
        h = self._rview(stage.host(t, read=True, write=True), real)
        return self._submit("allreduce", stage, lambda a: [self._comm.all_reduce(h, op=op, async_op=a)], [t], opts)

    def allreduce_coalesced(self, tensors, opts=None) -> UcclWork:
        opts = _opts(opts, _c10d.AllreduceCoalescedOptions, "reduceOp")
        tensors = _as_list(tensors)
        if not tensors:
            raise _err("allreduce_coalesced", "requires non-empty tensor list")
        self._same_type(tensors, tensors[0], "allreduce_coalesced")
        op, real = self._reduction(tensors[0].dtype, opts.reduceOp, "allreduce_coalesced")
        stage = Stage.of(tensors)
        hs = [self._rview(stage.host(t, read=True, write=True), real) for t in tensors]
        return self._submit("allreduce_coalesced", stage,
                            lambda a: [self._comm.all_reduce(h, op=op, async_op=a) for h in hs], tensors, opts)

    def broadcast(self, tensors, opts=None) -> UcclWork:
        opts = _opts(opts, _c10d.BroadcastOptions, "rootRank")
        t = self._single(tensors, "broadcast")
        root = self._root(opts.rootRank, "broadcast")
        if getattr(opts, "rootTensor", 0) != 0:
            raise _err("broadcast", f"invalid root tensor: {opts.rootTensor}")
        if self._fast(opts, t) and t.dtype in _NATIVE:
            self._comm.broadcast(t, root=root)
            return self._done_work
        me = self.rank() == root
        stage = Stage.of((t,))
        h, _ = _move(stage.host(t, read=me, write=not me))
        return self._submit("broadcast", stage, lambda a: [self._comm.broadcast(h, root=root, async_op=a)], [t], opts)

    def reduce(self, tensors, opts=None) -> UcclWork:
        opts = _opts(opts, _c10d.ReduceOptions, "reduceOp")
        t = self._single(tensors, "reduce")
        root = self._root(opts.rootRank, "reduce")
        op, real = self._reduction(t.dtype, opts.reduceOp, "reduce")
        stage = Stage.of((t,))
        h = self._rview(stage.host(t, read=True, write=self.rank() == root), real)
        return self._submit("reduce", stage, lambda a: [self._comm.reduce(h, op=op, root=root, async_op=a)], [t],
                            opts)

    def allgather(self, output_lists, inputs, opts=None) -> UcclWork:
        opts = _opts(opts, _c10d.AllgatherOptions)
        t = self._single(inputs, "allgather")
        if len(output_lists) != 1:
            raise _err("allgather", f"requires a single-element output list, got {len(output_lists)}")
        outs = list(output_lists[0])
        if len(outs) != self.size():
            raise _err("allgather", f"invalid output tensor list at index 0 (expected length {self.size()}, "
                                    f"got {len(outs)})")
        self._same_type(outs, t, "allgather")
        self._same_size(outs, t.shape, "allgather")
        stage = Stage.of([t] + outs)
        hin, _ = _move(stage.host(t))
        hout, _ = _move(stage.pack(outs, t.dtype, read=False, write=True))
        return self._submit("allgather", stage, lambda a: [self._comm.all_gather(hin, hout, async_op=a)], outs, opts)

    def all_gather_single(self, output, input, opts=None) -> UcclWork:
        opts = _opts(opts, _c10d.AllgatherOptions)
        self._same_type([output], input, "allgather")
        if output.numel() != input.numel() * self.size():
            raise _err("allgather", f"invalid output tensor size (expected {self.size()} x {input.numel()} "
                                    f"elements, got {output.numel()})")
        stage = Stage.of((input, output))
        hin, _ = _move(stage.host(input))
        hout, _ = _move(stage.host(output, read=False, write=True))
        return self._submit("allgather", stage, lambda a: [self._comm.all_gather(hin, hout, async_op=a)], [output],
                            opts)

    def all_gather_single_coalesced(self, outputs, inputs, opts=None) -> UcclWork:
        opts = _opts(opts, _c10d.AllgatherOptions)
        if len(outputs) != len(inputs):
            raise _err("allgather_into_tensor_coalesced", f"{len(outputs)} outputs for {len(inputs)} inputs")
        stage = Stage.of(list(outputs) + list(inputs))
        pairs = []
        for o, i in zip(outputs, inputs):
            self._same_type([o], i, "allgather_into_tensor_coalesced")
            if o.numel() != i.numel() * self.size():
                raise _err("allgather_into_tensor_coalesced", f"invalid output tensor size (expected {self.size()}"
                                                              f" x {i.numel()} elements, got {o.numel()})")
            pairs.append((_move(stage.host(i))[0], _move(stage.host(o, read=False, write=True))[0]))
        return self._submit("allgather_into_tensor_coalesced", stage,
                            lambda a: [self._comm.all_gather(x, y, async_op=a) for x, y in pairs], list(outputs), opts)

    def allgather_coalesced(self, output_lists, inputs, opts=None) -> UcclWork:
        opts = _opts(opts, _c10d.AllgatherOptions)
        inputs = list(inputs)
        if not inputs:
            raise _err("allgather_coalesced", "requires non-empty input tensor list")
        if len(output_lists) != self.size():
            raise _err("allgather_coalesced", f"output lists should be equal to world size ({self.size()}), "
                                              f"got {len(output_lists)}")
        self._same_type(inputs, inputs[0], "allgather_coalesced")
        flat_out = []
        for r, outs in enumerate(output_lists):
            if len(outs) != len(inputs):
                raise _err("allgather_coalesced", f"output list {r} has {len(outs)} tensors, expected {len(inputs)}")
            self._same_type(outs, inputs[0], "allgather_coalesced")
            for o, i in zip(outs, inputs):
                if o.numel() != i.numel():
                    raise _err("allgather_coalesced", f"invalid tensor size (expected {tuple(i.shape)}, "
                                                      f"got {tuple(o.shape)})")
            flat_out.extend(outs)
        stage = Stage.of(inputs + flat_out)
        hin, _ = _move(stage.pack(inputs, inputs[0].dtype))
        hout, _ = _move(stage.pack(flat_out, inputs[0].dtype, read=False, write=True))
        return self._submit("allgather_coalesced", stage, lambda a: [self._comm.all_gather(hin, hout, async_op=a)],
                            [list(o) for o in output_lists], opts)

    def gather(self, output_lists, inputs, opts=None) -> UcclWork:
        opts = _opts(opts, _c10d.GatherOptions, "rootRank")
        t = self._single(inputs, "gather")
        root = self._root(opts.rootRank, "gather")
        outs = self._root_list(output_lists, t, root, "gather", "output")
        stage = Stage.of([t] + outs)
        hin, _ = _move(stage.host(t))
        hout = _move(stage.pack(outs, t.dtype, read=False, write=True))[0] if outs else None
        return self._submit("gather", stage, lambda a: [self._comm.gather(hin, hout, root=root, async_op=a)], outs,
                            opts)

    def scatter(self, outputs, input_lists, opts=None) -> UcclWork:
        opts = _opts(opts, _c10d.ScatterOptions, "rootRank")
        t = self._single(outputs, "scatter")
        root = self._root(opts.rootRank, "scatter")
        ins = self._root_list(input_lists, t, root, "scatter", "input")
        stage = Stage.of([t] + ins)
        hout, _ = _move(stage.host(t, read=False, write=True))
        hin = _move(stage.pack(ins, t.dtype))[0] if ins else None
        return self._submit("scatter", stage, lambda a: [self._comm.scatter(hin, hout, root=root, async_op=a)], [t],
                            opts)

    def reduce_scatter(self, outputs, input_lists, opts=None) -> UcclWork:
        opts = _opts(opts, _c10d.ReduceScatterOptions, "reduceOp")
        t = self._single(outputs, "reduce_scatter")
        if len(input_lists) != 1:
            raise _err("reduce_scatter", f"requires a single-element input list, got {len(input_lists)}")
        ins = list(input_lists[0])
        if len(ins) != self.size():
            raise _err("reduce_scatter", f"invalid input tensor list at index 0 (expected length {self.size()}, "
                                         f"got {len(ins)})")
        self._same_type(ins, t, "reduce_scatter")
        self._same_size(ins, t.shape, "reduce_scatter")
        op, real = self._reduction(t.dtype, opts.reduceOp, "reduce_scatter")
        stage = Stage.of([t] + ins)
        hin = self._rview(stage.pack(ins, t.dtype), real)
        hout = self._rview(stage.host(t, read=False, write=True), real)
        return self._submit("reduce_scatter", stage,
                            lambda a: [self._comm.reduce_scatter(hin, hout, op=op, async_op=a)], [t], opts)

    def reduce_scatter_single(self, output, input, opts=None) -> UcclWork:
        opts = _opts(opts, _c10d.ReduceScatterOptions, "reduceOp")
        self._same_type([output], input, "reduce_scatter")
        if input.numel() != output.numel() * self.size():
            raise _err("reduce_scatter", f"invalid input tensor size (expected {self.size()} x {output.numel()} "
                                         f"elements, got {input.numel()})")
        op, real = self._reduction(input.dtype, opts.reduceOp, "reduce_scatter")
        stage = Stage.of((input, output))
        hin = self._rview(stage.host(input), real)
        hout = self._rview(stage.host(output, read=False, write=True), real)
        return self._submit("reduce_scatter", stage,
                            lambda a: [self._comm.reduce_scatter(hin, hout, op=op, async_op=a)], [output], opts)

    def reduce_scatter_single_coalesced(self, outputs, inputs, opts=None) -> UcclWork:
        opts = _opts(opts, _c10d.ReduceScatterOptions, "reduceOp")
        if len(outputs) != len(inputs):
            raise _err("reduce_scatter_tensor_coalesced", f"{len(outputs)} outputs for {len(inputs)} inputs")
        stage = Stage.of(list(outputs) + list(inputs))
        items = []
        for o, i in zip(outputs, inputs):
            self._same_type([o], i, "reduce_scatter_tensor_coalesced")
            if i.numel() != o.numel() * self.size():
                raise _err("reduce_scatter_tensor_coalesced", f"invalid input tensor size (expected {self.size()} x "
                                                              f"{o.numel()} elements, got {i.numel()})")
            op, real = self._reduction(i.dtype, opts.reduceOp, "reduce_scatter_tensor_coalesced")
            items.append((self._rview(stage.host(i), real),
                          self._rview(stage.host(o, read=False, write=True), real), op))
        return self._submit("reduce_scatter_tensor_coalesced", stage,
                            lambda a: [self._comm.reduce_scatter(x, y, op=op, async_op=a) for x, y, op in items],
                            list(outputs), opts)

    def _splits_of(self, t: torch.Tensor, splits: Sequence[int]) -> list[int]:
        """Element counts per rank for dim-0 split sizes (gloo's checkSplitSizes)."""
        n = self.size()
        rows = t.shape[0] if t.dim() > 0 else t.numel()
        row = t.numel() // rows if rows else 0
        if not splits:
            if rows % n:
                raise RuntimeError("Tensor's dim 0 does not divide equally across group size")
            return [rows // n * row] * n
        if len(splits) != n:
            raise RuntimeError("Number of tensor splits not equal to group size")
        if sum(splits) != rows or any(s < 0 for s in splits):
            raise RuntimeError("Split sizes doesn't match total dim 0 size")
        return [int(s) * row for s in splits]

    def all_to_all_single(self, output, input, output_split_sizes=None, input_split_sizes=None,
                          opts=None) -> UcclWork:
        opts = _opts(opts, _c10d.AllToAllOptions)
        if output.dtype != input.dtype:
            raise _err("alltoall_base", f"input is {input.dtype} but output is {output.dtype}")
        sc = self._splits_of(input, list(input_split_sizes or []))
        rc = self._splits_of(output, list(output_split_sizes or []))
        # Even splits go through all_to_all: its size is the same on every rank, so the tuner
        # may choose by it (small calls aggregate per host); all_to_all_v's may not.
        even = not input_split_sizes and not output_split_sizes and input.numel() == output.numel()

        def exchange(x, y, a=False):
            if even:
                return self._comm.all_to_all(x, y, async_op=a)
            return self._comm.all_to_all_v(x, sc, y, rc, async_op=a)

        if self._fast(opts, input, output) and input.dtype in _NATIVE:
            exchange(input, output)
            return self._done_work
        stage = Stage.of((input, output))
        hin, k = _move(stage.host(input))
        hout, _ = _move(stage.host(output, read=False, write=True))
        if k != 1:
            sc, rc = [c * k for c in sc], [c * k for c in rc]
        return self._submit("alltoall_base", stage, lambda a: [exchange(hin, hout, a)], [output], opts)

    def alltoall(self, outputs, inputs, opts=None) -> UcclWork:
        opts = _opts(opts, _c10d.AllToAllOptions)
        outputs, inputs = list(outputs), list(inputs)
        n = self.size()
        if len(outputs) != n or len(inputs) != n:
            raise _err("alltoall", f"requires {n} input and {n} output tensors, got {len(inputs)} and {len(outputs)}")
        ref = inputs[0]
        self._same_type(inputs + outputs, ref, "alltoall")
        stage = Stage.of(inputs + outputs)
        hin, k = _move(stage.pack(inputs, ref.dtype))
        hout, _ = _move(stage.pack(outputs, ref.dtype, read=False, write=True))
        sc = [t.numel() * k for t in inputs]
        rc = [t.numel() * k for t in outputs]
        return self._submit("alltoall", stage, lambda a: [self._comm.all_to_all_v(hin, sc, hout, rc, async_op=a)],
                            outputs, opts)

    def barrier(self, opts=None) -> UcclWork:
        opts = _opts(opts, _c10d.BarrierOptions)
        return self._submit("barrier", Stage(None), lambda a: [self._comm.barrier(async_op=a)], [], opts)

    def monitored_barrier(self, timeout=None, wait_all_ranks: bool = False) -> None:
        """gloo's monitored barrier: rank 0 waits for every rank (reporting the ones that do
        not arrive within `timeout`), then releases them."""
        limit = timedelta_seconds(timeout, self._timeout)
        ms = int(limit * 1000)
        arrive = _TAG_MONITORED + 2 * self._monitored
        release = arrive + 1
        self._monitored += 1
        me, n = self.rank(), self.size()
        token = torch.zeros(1, dtype=torch.uint8)
        if me != 0:
            self._comm.isend(token, 0, arrive).wait(limit)
            buf = torch.zeros(1, dtype=torch.uint8)
            req = self._comm.irecv(buf, 0, release)
            try:
                req.wait(limit)
            except (UcclTimeoutError, PeerFailureError) as exc:
                self._orphans.append((req, buf))
                raise RuntimeError(f"[Rank {me}]: Rank 0 did not release monitoredBarrier in {ms} ms "
                                   f"(it reports the ranks that failed): {exc}") from exc
            return
        bufs = {r: torch.zeros(1, dtype=torch.uint8) for r in range(1, n)}
        reqs = {r: self._comm.irecv(bufs[r], r, arrive) for r in range(1, n)}
        deadline = time.monotonic() + limit
        failed = []
        for r, req in reqs.items():
            try:
                req.wait(max(0.0, deadline - time.monotonic()) if not failed or wait_all_ranks else 0.0)
            except (UcclTimeoutError, PeerFailureError):
                failed.append(r)
                self._orphans.append((req, bufs[r]))
                if not wait_all_ranks:
                    break
        if failed:
            who = f"Rank {failed[0]}" if len(failed) == 1 else "Ranks " + ", ".join(map(str, failed))
            raise RuntimeError(f"[Rank 0]: {who} failed to pass monitoredBarrier in {ms} ms")
        sends = [self._comm.isend(token, r, release) for r in range(1, n)]
        for s in sends:
            s.wait(limit)

    # -- point to point ---------------------------------------------------------------------
    def _tag(self, tag: int, what: str) -> int:
        if not 0 <= int(tag) < _USER_TAG_LIMIT:
            raise _err(what, f"tag must be in [0, 2^62), got {tag}")
        return int(tag)

    def _peer(self, peer: int, what: str) -> int:
        if not 0 <= peer < self.size():
            raise _err(what, f"invalid rank {peer} for a group of {self.size()}")
        return peer

    def send(self, tensors, dst: int, tag: int = 0) -> UcclWork:
        t = self._single(tensors, "send")
        if not t.is_contiguous():
            raise RuntimeError("input tensor has to be contiguous")
        dst, tag = self._peer(dst, "send"), self._tag(tag, "send")
        stage = Stage.of((t,))
        h, _ = _move(stage.host(t))
        return self._submit("send", stage, lambda a: [self._comm.isend(h, dst, tag)], [t], None, blocking_ok=False)

    def recv(self, tensors, src: int, tag: int = 0) -> UcclWork:
        src = self._peer(src, "recv")
        return self._recv(tensors, src, tag)

    def recv_anysource(self, tensors, tag: int = 0) -> UcclWork:
        global _ANY
        if _ANY is None:
            from uccl.transport.endpoint import ANY_SOURCE as _ANY
        return self._recv(tensors, _ANY, tag)

    def _recv(self, tensors, src, tag) -> UcclWork:
        t = self._single(tensors, "recv")
        if not t.is_contiguous():
            raise RuntimeError("output tensor has to be contiguous")
        tag = self._tag(tag, "recv")
        stage = Stage.of((t,))
        h, _ = _move(stage.host(t, read=False, write=True))
        return self._submit("recv", stage, lambda a: [self._comm.irecv(h, src, tag)], [t], None, blocking_ok=False)

    # -- groups -----------------------------------------------------------------------------
    def split_group(self, ranks: Sequence[int], timeout=None, opts=None, group_name: Optional[str] = None,
                    group_desc: Optional[str] = None, *args, **kwargs) -> Optional["ProcessGroupUCCL"]:
        """A new group of `ranks` (ranks of this group); every rank of this group calls it,
        and those outside `ranks` get None."""
        ranks = sorted(int(r) for r in ranks)
        me = self.rank()
        self._splits += 1
        color = ranks[0] if me in ranks else None
        sub = self._comm.split(color, key=me)
        if sub is None:
            return None
        name = group_name or f"{self._group_id}:split{self._splits}"
        store = _c10d.PrefixStore(f"{name}/", self._store)
        secs = timedelta_seconds(timeout, self._timeout)
        pg = ProcessGroupUCCL(store, sub.rank, sub.world_size, datetime.timedelta(seconds=secs), group_id=name,
                              global_ranks=[self._global_ranks[r] for r in ranks], comm=sub)
        try:
            pg._set_group_name(name)
            if group_desc:
                pg._set_group_desc(group_desc)
        except (AttributeError, RuntimeError):
            pass
        return pg

    # -- lifetime ---------------------------------------------------------------------------
    def shutdown(self) -> None:
        """destroy_process_group: a best-effort barrier first (bounded, errors ignored), so
        that no rank tears its endpoint down while a peer still waits for its last data
        (the net channel does not linger on close), then the group's threads stop."""
        if self._closed:
            return
        self._closed = True
        try:
            self._comm.barrier(async_op=True).wait(min(self._timeout, 5.0))
        except Exception:
            pass
        if self._issue_q is not None:
            self._issue_q.put(None)
            if self._issue_thread is not threading.current_thread():
                self._issue_thread.join(5.0)  # bounded, as the completer's below
        self._completer.close()

    def abort(self) -> None:
        self.shutdown()


# Older torch releases call the same operations by other names.
for _new, _olds in ALIASES.items():
    for _old in _olds:
        setattr(ProcessGroupUCCL, _old, getattr(ProcessGroupUCCL, _new))

