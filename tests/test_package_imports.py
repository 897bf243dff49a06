"""The package's import structure: every module loads once, whether imported or run with
`python -m`, and no module of the package imports one that imports it back."""

import ast
import os
import pkgutil
import subprocess
import sys
import textwrap

import uccl

ROOT = os.path.dirname(os.path.abspath(uccl.__file__))
ACYCLIC = ("uccl",)  # every module of the package

# Records the file of every module body Python executes (imports and runpy alike raise the
# "exec" audit event), then checks that none ran twice.
_COUNT_EXECS = textwrap.dedent("""
    import collections, os, sys
    root = os.path.realpath(sys.argv[1])
    runs = collections.Counter()
    def _hook(event, args):
        if event == "exec" and hasattr(args[0], "co_filename"):
            runs[os.path.realpath(args[0].co_filename)] += 1
    sys.addaudithook(_hook)
    def report():
        twice = sorted(f for f, n in runs.items() if n > 1 and f.startswith(root))
        print("TWICE", twice, "RAN", sorted(f[len(root) + 1:] for f in runs if f.startswith(root)), flush=True)
""")


def all_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages([ROOT], prefix="uccl.")
                  if not m.name.endswith("__main__"))


def run_counting(body: str, *argv: str) -> str:
    res = subprocess.run([sys.executable, "-c", _COUNT_EXECS + textwrap.dedent(body), ROOT, *argv],
                         capture_output=True, text=True, timeout=120)
    line = next((l for l in res.stdout.splitlines() if l.startswith("TWICE")), None)
    assert line is not None, res.stderr[-3000:]
    return line


def test_importing_every_module_loads_each_once():
    line = run_counting("""
        import importlib
        for name in %r:
            importlib.import_module(name)
        report()
    """ % all_modules())
    assert line.startswith("TWICE [] "), line
    assert "fabric/emulator.py" in line and "testing/netns.py" in line, line


def test_python_m_uccl_fabric_loads_each_module_once():
    line = run_counting("""
        import runpy
        sys.argv = ["uccl-fabric", "--help"]
        try:
            runpy.run_module("uccl.fabric", run_name="__main__", alter_sys=True)
        except SystemExit:
            pass
        report()
    """)
    assert line.startswith("TWICE [] "), line
    assert "fabric/__main__.py" in line and "fabric/cli.py" in line, line


def _imports(path: str, module: str, is_package: bool, modules) -> set:
    """uccl modules that `module` imports anywhere in its file (lazy imports included);
    `from pkg import sub` counts as importing pkg.sub when that is a module."""
    tree = ast.parse(open(path).read(), path)
    package = module if is_package else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
    return {m for m in out if m.startswith("uccl.")}


def test_no_import_circles():
    mods = {m.name: m for m in pkgutil.walk_packages([ROOT], prefix="uccl.")}
    graph = {}
    for name, info in mods.items():
        if not name.startswith(ACYCLIC):
            continue
        rel = name[len("uccl."):].replace(".", os.sep)
        path = os.path.join(ROOT, rel, "__init__.py") if info.ispkg else os.path.join(ROOT, rel + ".py")
        graph[name] = {m for m in _imports(path, name, info.ispkg, mods) if m in mods and m != name}

    state: dict = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert graph["uccl.fabric.cli"] >= {"uccl.fabric.emulator", "uccl.fabric.ranks"}
