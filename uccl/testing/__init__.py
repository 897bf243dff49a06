"""Test helpers for uccl's own tests and benchmarks (like torch.testing); not used by the library.

Public:
    run_ranks(fn, world_size, ...)    fn(ctx, *args) on N local processes; their results by rank
    RankContext                       what fn gets: rank, world_size, bootstrap, store
    RankFailure                       raised with every failing rank's report

    uccl.testing.netns (needs root; imported on its own, it brings in the namespace tools):
    NetnsPair                         two network namespaces joined by a veth, with rate and loss
    run_pair(pair, "file.py:fn", args)  fn(bootstrap, **args) as rank 0 / rank 1 across the pair
    available()                       whether this machine can make namespaces, and why not

    uccl.testing.fabric (needs root):
    run_on_fabric(script, source, ...)  a torch.distributed script on a fresh emulated fabric
"""

from uccl.testing.ranks import RankContext, RankFailure, run_ranks

__all__ = ["RankContext", "RankFailure", "run_ranks"]
