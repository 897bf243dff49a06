"""A short run of every libFuzzer harness (native/fuzz, docs/fuzzing.md) over its seed corpus.

The harnesses are built with clang, AddressSanitizer and UBSan (UCCL_FUZZ=ON, without the
Python module) into build/fuzz, once per session; each then replays its committed corpus
(seeds and the regression inputs of fixed findings) and runs a bounded number of new inputs.
Any crash, leak, sanitizer report or broken property fails the case. Without clang or its
libFuzzer the module is skipped, saying which is missing.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FUZZ = ROOT / "native" / "fuzz"
CORPUS = FUZZ / "corpus"
BUILD = ROOT / "build" / "fuzz"
HARNESSES = re.search(r"set\(UCCL_FUZZ_HARNESSES ([^)]*)\)", (FUZZ / "CMakeLists.txt").read_text()).group(1).split()
RUNS = 20000


def _clang() -> str:
    clang = shutil.which("clang++")
    if clang is None:
        pytest.skip("clang++ is not installed (scripts/setup.sh installs clang, which ships libFuzzer)")
    return clang


@pytest.fixture(scope="session")
def fuzzers(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    clang = _clang()
    probe = tmp_path_factory.mktemp("libfuzzer-probe")
    (probe / "t.cc").write_text('#include <cstddef>\n#include <cstdint>\n'
                                'extern "C" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n')
    done = subprocess.run([clang, "-fsanitize=fuzzer,address,undefined", str(probe / "t.cc"), "-o", str(probe / "t")],
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.skip(f"clang++ cannot build a libFuzzer target (compiler-rt missing?):\n{done.stderr[-1500:]}")
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.fail("cmake is not installed (scripts/setup.sh installs it)")
    configure = [cmake, "-S", str(ROOT / "native"), "-B", str(BUILD), f"-DCMAKE_CXX_COMPILER={clang}",
                 "-DUCCL_FUZZ=ON", "-DUCCL_PYTHON=OFF", "-DCMAKE_BUILD_TYPE=Release"]
    build = [cmake, "--build", str(BUILD), "-j2", "--target", "uccl_fuzzers"]
    for step in (configure, build):
        done = subprocess.run(step, capture_output=True, text=True, timeout=1200)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(step[:3])} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return BUILD / "fuzz"


def test_every_harness_has_a_corpus():
    assert HARNESSES, "no harness named in native/fuzz/CMakeLists.txt"
    for h in HARNESSES:
        assert (FUZZ / f"fuzz_{h}.cc").is_file(), h
        assert any((CORPUS / h).glob("seed-*")), f"no seed corpus in native/fuzz/corpus/{h}"


def test_seed_corpus_is_what_the_generator_writes(fuzzers: pathlib.Path, tmp_path: pathlib.Path):
    """The committed seeds follow the current wire format (make_corpus.cc builds them from its structs)."""
    subprocess.run([str(fuzzers / "uccl_fuzz_corpus"), str(tmp_path)], check=True, timeout=60)
    for fresh in sorted(tmp_path.glob("*/seed-*")):
        committed = CORPUS / fresh.parent.name / fresh.name
        assert committed.is_file() and committed.read_bytes() == fresh.read_bytes(), (
            f"{committed.relative_to(ROOT)} is stale: regenerate with build/fuzz/fuzz/uccl_fuzz_corpus native/fuzz/corpus")


@pytest.mark.parametrize("harness", HARNESSES)
def test_fuzz_short(fuzzers: pathlib.Path, harness: str, tmp_path: pathlib.Path):
    # New inputs go to tmp_path (libFuzzer writes into its first corpus directory), never into the repo.
    cmd = [str(fuzzers / f"fuzz_{harness}"), f"-runs={RUNS}", "-seed=1", "-timeout=20", "-rss_limit_mb=2048",
           "-max_total_time=240", f"-artifact_prefix={tmp_path}/", "-print_final_stats=1",
           str(tmp_path), str(CORPUS / harness)]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:allocator_may_return_null=0",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path)
    out = done.stdout + done.stderr
    artifacts = [p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "leak-", "oom-", "timeout-"))]
    assert done.returncode == 0 and not artifacts, (
        f"fuzz_{harness} found a problem (rc={done.returncode}, inputs {artifacts}):\n{out[-6000:]}")
    assert "Done" in out, out[-3000:]
