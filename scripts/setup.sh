#!/usr/bin/env bash
# Prepares everything the README's commands need, idempotently: system packages
# (for the network-namespace tests and benchmarks, GoogleTest for the native unit tests), a virtualenv in .venv with
# torch 2.13.0 (CPU), OpenMPI + mpi4py, and uccl itself (editable, native build).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${UCCL_VENV:-.venv}

need_pkgs=()
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v nft >/dev/null || need_pkgs+=(nftables)
command -v tc >/dev/null || need_pkgs+=(iproute2)
command -v g++ >/dev/null || need_pkgs+=(g++)
[ -f /usr/include/gtest/gtest.h ] || need_pkgs+=(libgtest-dev)  # native unit tests
command -v clang++ >/dev/null || need_pkgs+=(clang)  # the fuzz harnesses (libFuzzer ships with clang)
if ((${#need_pkgs[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "[setup] installing system packages: ${need_pkgs[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "[setup] not root: skipping system packages ${need_pkgs[*]} (namespace tests will be skipped)"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
stamp="$VENV/.uccl-deps-v1"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing dependencies (torch 2.13.0 CPU, OpenMPI, mpi4py, test and plot tools)"
  python -m pip install -q --upgrade pip
  python -m pip install -q "torch==2.13.0"
  touch "$stamp"
fi
echo "[setup] building uccl (native core)"
python -m pip install -q -e ".[torch,mpi,perf,test]"
python -c "import uccl._native" && echo "[setup] ready: $(python -c 'import uccl; print(uccl.__file__)')"
