"""The package as installed: no import cycle, every module importable on its own, and `plasticnet bench` from a
wheel installed outside the source tree."""

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "plasticnet"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path) -> set[str]:
    """The plasticnet modules a module imports when it is imported (not those imported inside functions, at call
    time), ``from . import x`` resolved to the module ``x`` where it is one."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                found.add(base)
                found.update(f"{base}.{a.name}" for a in child.names)
            visit(child)

    visit(ast.parse(path.read_text()))
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in found if m in modules and m != name}


def _package_of(module: str) -> str:
    """A module's unit in the dependency graph: a subpackage (plasticnet.train, plasticnet.tasks...) as a whole,
    or a top-level module."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_import_cycle_between_the_packages():
    """The package-level graph of import-time imports has no cycle (plasticnet/__init__ aside: importing any
    submodule runs it, it imports the layers). The training loop looks the task registry up at call time."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        src = _package_of(_module_name(path))
        for target in _top_level_imports(path):
            dst = _package_of(target)
            if src != dst and "plasticnet" not in (src, dst):
                graph.setdefault(src, set()).add(dst)
    assert "plasticnet.tasks" not in graph.get("plasticnet.train", set())
    state: dict[str, int] = {}

    def cycle_from(node, path):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (found := cycle_from(nxt, path + [node])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            assert cycle_from(node, []) is None, " -> ".join(cycle_from(node, []) or [])


def test_every_module_imports_first():
    """Each module imported first, in a fresh set of plasticnet modules (one interpreter, torch loaded once)."""
    modules = sorted(_module_name(p) for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")
    script = (
        "import importlib, sys, torch\n"
        f"for name in {modules!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'plasticnet' or m.startswith('plasticnet.')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
        "print('ok', len(" + repr(modules) + "))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(SRC)})
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_bench_runs_from_a_wheel_installed_outside_the_source_tree(tmp_path):
    """Build the wheel, install it into a folder of its own, and run `plasticnet bench` from another folder: the
    plain formulations travel in the wheel (plasticnet.baselines)."""
    root = tmp_path / "source"  # a copy: building writes build/ and egg-info beside the sources
    shutil.copytree(SRC, root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(SRC.parent / name, root / name)
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "cwd"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(root)], check=True,
                   timeout=300, capture_output=True)
    wheel = next(wheels.glob("plasticnet-*.whl"))
    assert any(n.startswith("plasticnet/baselines/plain_maze.py") for n in zipfile.ZipFile(wheel).namelist())
    subprocess.run(pip + ["install", "--no-deps", "--target", str(target), str(wheel)], check=True, timeout=300,
                   capture_output=True)
    # The PyTorch operations, not the Numba kernels: compiling those afresh for the installed copy takes a minute.
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}

    def plasticnet(*args):
        code = ("import sys, plasticnet.cli; from plasticnet.fast import use_backend; "
                "print(plasticnet.__file__, file=sys.stderr)\n"
                "with use_backend('torch'): sys.exit(plasticnet.cli.main())")
        return subprocess.run([sys.executable, "-c", code, *args], cwd=elsewhere, env=env, capture_output=True,
                              text=True, timeout=600)

    help_run = plasticnet("bench", "--help")
    assert help_run.returncode == 0 and "maze" in help_run.stdout
    assert help_run.stderr.strip().startswith(str(target))  # the installed copy ran, not the source tree
    run = plasticnet("bench", "maze", "--batch-sizes", "1", "--rounds", "1")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "speed-up" in run.stdout and "x" in run.stdout.splitlines()[-1]
