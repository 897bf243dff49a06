#!/usr/bin/env bash
# The whole test suite, set-up included. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
source .venv/bin/activate
exec python -m pytest -q -ra "$@"
