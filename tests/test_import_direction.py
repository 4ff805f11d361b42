"""Imports point one way: the library's lower layers (core, eval, sensitivity) never import the layers
built on them (experiments, report, results, the CLI)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import calderalab

PACKAGE = Path(calderalab.__file__).resolve().parent
ABOVE = ("calderalab.experiments", "calderalab.report", "calderalab.results", "calderalab.cli", "calderalab.commands")

# In a fresh interpreter: import the package and each of its submodules in turn, and report the
# first module after whose import any of ABOVE is in sys.modules.
_PROBE = """
import importlib, json, pkgutil, sys
above = {above!r}
def loaded():
    return sorted(m for m in sys.modules if any(m == a or m.startswith(a + ".") for a in above))
package = importlib.import_module({package!r})
names = [{package!r}] + sorted(m.name for m in pkgutil.walk_packages(package.__path__, {package!r} + "."))
for name in names:
    importlib.import_module(name)
    if loaded():
        print(json.dumps({{"module": name, "loaded": loaded(), "n": len(names)}}))
        break
else:
    print(json.dumps({{"module": None, "loaded": [], "n": len(names)}}))
"""


@pytest.mark.parametrize("package", ["calderalab.core", "calderalab.eval", "calderalab.sensitivity"])
def test_importing_a_lower_layer_loads_nothing_above_it(package):
    code = _PROBE.format(above=ABOVE, package=package)
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["n"] > 1  # the package and its submodules were walked
    assert found["module"] is None, f"importing {found['module']} loads {found['loaded']}"


def _imported_names(path: Path) -> list[tuple[int, str]]:
    """Every calderalab module a file imports, at module level or inside a function."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


@pytest.mark.parametrize("folder", ["core", "eval"])
def test_no_deferred_import_points_up_either(folder):
    """An import inside a function escapes the fresh-interpreter check until it runs: read the source."""
    bad = [f"{path.relative_to(PACKAGE)}:{line} imports {name}"
           for path in sorted((PACKAGE / folder).rglob("*.py")) for line, name in _imported_names(path)
           if any(name == a or name.startswith(a + ".") for a in ABOVE)]
    assert bad == []
