"""Loaded at interpreter start by scripts/tsan.sh (PYTHONPATH): `import uccl._native`
finds the ThreadSanitizer build named by UCCL_TSAN_NATIVE instead of the editable
install's module. The editable install's finder sits in sys.meta_path, ahead of
PYTHONPATH, so this finder goes in front of it."""

import importlib.machinery
import importlib.util
import os
import sys

_PATH = os.environ.get("UCCL_TSAN_NATIVE")


class _TsanNativeFinder:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != "uccl._native" or not _PATH:
            return None
        loader = importlib.machinery.ExtensionFileLoader(name, _PATH)
        return importlib.util.spec_from_file_location(name, _PATH, loader=loader)


if _PATH:
    sys.meta_path.insert(0, _TsanNativeFinder())
