"""Fine-grained compute/communication overlap on uccl's transport.

- `uccl.overlap.moe`: DeepEP-shaped MoE dispatch/combine and an expert-parallel layer.
- `uccl.overlap.tp`: tensor-parallel GEMMs fused with their collectives.

The unit of dependency is a piece, not the whole collective: a piece lands in the
consumer's registered buffer, and the consumer computes on it while later pieces are
still in flight.
"""
