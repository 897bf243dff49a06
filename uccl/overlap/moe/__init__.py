"""MoE expert parallelism on uccl's transport, with DeepEP's Buffer interface.

    buffer = Buffer(group)                      # group: torch ProcessGroup, Communicator or Bootstrap
    n_rank, _, n_expert, in_rank, _ = buffer.get_dispatch_layout(topk_idx, num_experts)
    recv_x, recv_idx, recv_w, per_expert, handle, _ = buffer.dispatch(
        x, num_tokens_per_rank=n_rank, is_token_in_rank=in_rank, num_tokens_per_expert=n_expert,
        topk_idx=topk_idx, topk_weights=topk_weights)
    combined_x, _, _ = buffer.combine(expert_out, handle)
    out = buffer.dispatch_compute_combine(x, topk_idx, topk_weights, expert_fn, num_experts)
"""

from uccl.overlap.moe.buffer import Buffer, Handle
from uccl.overlap.moe.events import EventOverlap
from uccl.overlap.moe.layer import Expert, MoELayer

__all__ = ["Buffer", "EventOverlap", "Expert", "Handle", "MoELayer"]
