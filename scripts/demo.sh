#!/usr/bin/env bash
# The main job on the embedded default (one host, no configuration): a small model
# trains with DDP over torch.distributed backend "uccl" (checked against gloo), then
# 4 local ranks print an nccl-tests-style all_reduce table, uccl beside gloo.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
source .venv/bin/activate

echo
echo "== DDP over backend=\"uccl\" (2 ranks, shared memory), losses beside gloo's =="
python examples/ddp_train.py --world 2

echo
echo "== all_reduce, 4 ranks on this host (uccl-run), uccl vs gloo =="
uccl-run --nproc-per-node 4 perf/all_reduce_perf.py -b 8 -e 16M -f 4 -n 10 -w 3 -c 1 --compare gloo
