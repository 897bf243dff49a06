"""Writes what derives from the settings' one declaration (uccl/config.py): the native
defaults header the build includes, and the README's configuration table.

    python -m uccl.config_cli --markdown
    python -m uccl.config_cli --native-header FILE     (the build runs this)
"""

from __future__ import annotations

import sys
from typing import Sequence

from uccl.config import markdown_table, native_header


def main(argv: Sequence[str]) -> int:
    if len(argv) == 2 and argv[0] == "--native-header":
        text = native_header()
        try:
            with open(argv[1]) as f:
                if f.read() == text:
                    return 0  # unchanged: keep the timestamp, so nothing rebuilds
        except OSError:
            pass
        with open(argv[1], "w") as f:
            f.write(text)
        return 0
    if len(argv) == 1 and argv[0] == "--markdown":
        print(markdown_table())
        return 0
    print("usage: python -m uccl.config_cli --native-header FILE | --markdown", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
