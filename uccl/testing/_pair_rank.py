"""The process of one rank of `run_pair` (uccl.testing.netns): `python -m uccl.testing._pair_rank
FILE.py:FUNCTION ARGS_JSON` runs FUNCTION(bootstrap, **ARGS) and prints its JSON-able result."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

RESULT_PREFIX = "UCCL_NETNS_RESULT "


def main(target: str, args_json: str) -> None:
    from uccl.transport.bootstrap import bootstrap_from_env

    path, func = target.rsplit(":", 1)
    spec = importlib.util.spec_from_file_location("_uccl_netns_target", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    bs = bootstrap_from_env(timeout=60)
    result = getattr(module, func)(bs, **json.loads(args_json))
    # Rank 0 hosts the store: it leaves only after every other rank is done with it.
    if bs.rank == 0:
        may_die = {int(r) for r in os.environ.get("UCCL_NETNS_MAY_DIE", "").split(",") if r}
        for r in range(1, bs.world_size):
            if r not in may_die:
                bs.store.get(f"netns/done/{r}")
    else:
        bs.store.set(f"netns/done/{bs.rank}", b"1")
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
