#!/usr/bin/env bash
# ThreadSanitizer run (make tsan; docs/tsan.md): builds uccl._native with
# -fsanitize=thread into build/tsan (the editable install is left alone), then runs
# the concurrency tests and a few transport/collective tests with that module,
# libtsan preloaded into the (uninstrumented) interpreter, halting on the first report.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
[ -x .venv/bin/python ] || ./scripts/setup.sh
PY=$ROOT/.venv/bin/python
BUILD=$ROOT/build/tsan
JOBS=${UCCL_TSAN_JOBS:-2}

LIBTSAN=$(g++ -print-file-name=libtsan.so)
LIBTSAN=$(readlink -f "$LIBTSAN")
[ -f "$LIBTSAN" ] || { echo "tsan: libtsan not found (g++ -print-file-name=libtsan.so)" >&2; exit 2; }

# pybind11 is a build-time requirement only (pip's isolated build env): keep a copy here.
PYBIND_DIR=$BUILD/pybind11/pybind11/share/cmake/pybind11
if [ ! -d "$PYBIND_DIR" ]; then
  "$PY" -m pip install -q --target "$BUILD/pybind11" "pybind11>=2.12" 2>&1 | grep -v "^WARNING: Location" || true
fi
[ -d "$PYBIND_DIR" ] || { echo "tsan: could not install pybind11 into $BUILD/pybind11" >&2; exit 2; }

echo "[tsan] building uccl._native and the native tests with -fsanitize=thread in $BUILD"
mkdir -p "$BUILD"
cmake -S native -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DUCCL_TSAN=ON -DUCCL_TESTS=ON \
  -DPython_EXECUTABLE="$PY" -Dpybind11_DIR="$PYBIND_DIR" >"$BUILD.configure.log" 2>&1 \
  || { tail -40 "$BUILD.configure.log"; exit 1; }
cmake --build "$BUILD" -j"$JOBS" --target _native uccl_native_tests
NATIVE=$(ls "$BUILD"/_native*.so)

# TSan needs its shadow layout: on kernels with 32+ bits of mmap randomness gcc 12's
# runtime aborts ("unexpected memory mapping"); setarch -R turns ASLR off for the run.
RUN=()
if setarch "$(uname -m)" -R true 2>/dev/null; then RUN=(setarch "$(uname -m)" -R); fi

# Reports go to files (one per process): pytest captures stderr, and a process that
# halts on a report takes its captured stderr with it.
REPORTS=$BUILD/reports
rm -rf "$REPORTS" && mkdir -p "$REPORTS"
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 report_signal_unsafe=0 \
suppressions=$ROOT/scripts/tsan/suppressions.txt log_path=$REPORTS/tsan ${UCCL_TSAN_OPTIONS:-}"
show_reports() {
  local rc=$?
  if compgen -G "$REPORTS/tsan*" >/dev/null; then
    echo "[tsan] ThreadSanitizer reports ($REPORTS):"; cat "$REPORTS"/tsan*; [ "$rc" -ne 0 ] || rc=66
  fi
  echo "[tsan] $( [ "$rc" -eq 0 ] && echo clean || echo "FAILED (exit $rc)" )"
  exit "$rc"
}
trap show_reports EXIT

echo "[tsan] native unit tests (region table seqlock among them)"
"${RUN[@]}" "$BUILD/tests/uccl_native_tests" --gtest_filter="${UCCL_TSAN_GTEST_FILTER:-RegionTable*}"

echo "[tsan] Python tests against $NATIVE"
export UCCL_TSAN_NATIVE=$NATIVE
export PYTHONPATH=$ROOT/scripts/tsan${PYTHONPATH:+:$PYTHONPATH}
export LD_PRELOAD=$LIBTSAN
export UCCL_CONCURRENCY_ROUNDS=${UCCL_CONCURRENCY_ROUNDS:-3}
"${RUN[@]}" "$PY" -c "import uccl._native as n, os; assert n.__file__ == os.environ['UCCL_TSAN_NATIVE'], n.__file__"
TESTS=(${UCCL_TSAN_TESTS:-tests/concurrency tests/transport/test_exchange.py tests/collectives/test_algorithms.py tests/collectives/test_topology.py::test_pipelined_hierarchical_all_reduce_matches_numpy tests/collectives/test_topology.py::test_a_dead_rank_fails_a_pipelined_all_reduce_on_every_rank})
"${RUN[@]}" timeout "${UCCL_TSAN_TIMEOUT:-3000}" "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}"
