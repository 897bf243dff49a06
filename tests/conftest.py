import os
import shutil

import pytest


# A rank or example that crashes (a rare SIGABRT at exit has been seen twice in full runs)
# prints every thread's Python stack on its stderr, which the failing test then shows.
os.environ.setdefault("PYTHONFAULTHANDLER", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "netns: needs root and network namespaces")
    config.addinivalue_line("markers", "mpi: needs mpirun and mpi4py")
    config.addinivalue_line("markers", "long: longer variant, skipped unless UCCL_LONG_TESTS=1 (CI runs the short ones)")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("UCCL_LONG_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="long test: set UCCL_LONG_TESTS=1 to run it")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def mpirun():
    exe = shutil.which("mpirun")
    if exe is None:
        pytest.skip("mpirun not installed (pip install 'uccl[mpi]')")
    return [exe] + (["--allow-run-as-root"] if os.geteuid() == 0 else []) + ["--oversubscribe"]
