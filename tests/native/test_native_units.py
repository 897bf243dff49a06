"""The native unit tests (native/tests, GoogleTest), one pytest case per GoogleTest case.

They are built here with CMake (UCCL_TESTS=ON, without the Python module) into
build/native-tests, once per session; the case list is read from the sources, so a case
that fails to build or run fails here rather than disappearing.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "native" / "tests").glob("*_test.cc"))
BUILD = ROOT / "build" / "native-tests"
BINARY = BUILD / "tests" / "uccl_native_tests"
CASES = [f"{suite}.{name}" for src in SOURCES
         for suite, name in re.findall(r"^TEST(?:_F)?\((\w+),\s*(\w+)\)", src.read_text(), re.M)]


@pytest.fixture(scope="session")
def native_tests() -> pathlib.Path:
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.fail("cmake is not installed (scripts/setup.sh installs it)")
    configure = [cmake, "-S", str(ROOT / "native"), "-B", str(BUILD), "-DUCCL_PYTHON=OFF", "-DUCCL_TESTS=ON",
                 "-DCMAKE_BUILD_TYPE=Release"]
    build = [cmake, "--build", str(BUILD), "-j2", "--target", "uccl_native_tests"]
    for step in (configure, build):
        done = subprocess.run(step, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(step[:2])} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return BINARY


def test_every_case_is_collected():
    assert CASES, "no TEST(...) found in native/tests/*_test.cc"


@pytest.mark.parametrize("case", CASES)
def test_native(native_tests: pathlib.Path, case: str):
    done = subprocess.run([str(native_tests), f"--gtest_filter={case}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "[  PASSED  ] 1 test" in done.stdout, done.stdout[-4000:] + done.stderr[-2000:]
