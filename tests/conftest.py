import os
import shutil

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "netns: needs root and network namespaces")
    config.addinivalue_line("markers", "mpi: needs mpirun and mpi4py")


@pytest.fixture
def mpirun():
    exe = shutil.which("mpirun")
    if exe is None:
        pytest.skip("mpirun not installed (pip install 'uccl[mpi]')")
    return [exe] + (["--allow-run-as-root"] if os.geteuid() == 0 else []) + ["--oversubscribe"]
