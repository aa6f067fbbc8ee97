"""The package's shape: every module imports on its own, no import cycle, and a CLI that parses
without loading the heavy stack."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "gaze_rl"
HEAVY = ("torch", "stable_baselines3", "mani_skill", "sapien")


def module_files() -> dict[str, Path]:
    """Every module of gaze_rl (dotted name -> file); packages by their __init__.py."""
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def runtime_imports(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at module level and inside functions, except under `if TYPE_CHECKING:`."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [node]
    if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
        children: list[ast.AST] = list(node.orelse)
    else:
        children = list(ast.iter_child_nodes(node))
    return [found for child in children for found in runtime_imports(child)]


def imported_gaze_modules(path: Path, known: set[str]) -> set[str]:
    """The gaze_rl modules a file imports, as the longest known module name of each
    `import gaze_rl...` / `from gaze_rl... import ...`."""
    found = set()
    for node in runtime_imports(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif node.level == 0 and node.module:
            # `from gaze_rl.bench import grid` imports the submodule; `from gaze_rl.x import f` only x.
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            if name.split(".")[0] != "gaze_rl":
                continue
            while name not in known:
                name = name.rpartition(".")[0]
            found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the gaze_rl modules it imports (static: what the files say)."""
    modules = module_files()
    return {name: imported_gaze_modules(path, set(modules)) - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_import_graph_has_no_cycle():
    graph = import_graph()
    assert "gaze_rl.commands.train" in graph and graph["gaze_rl.commands.train"]  # the walk sees the package
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_no_module_imports_a_command_but_the_cli_and_reference():
    # Commands sit on top: the build layer and the helpers never reach up into them.
    for name, imports in import_graph().items():
        commands = {m for m in imports if m.startswith("gaze_rl.commands.")}
        if name not in ("gaze_rl.cli", "gaze_rl.commands.reference"):
            assert not commands, f"{name} imports {commands}"


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(module_files())
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["eval", "--help"]])
def test_cli_parses_without_the_heavy_stack(argv):
    # `gaze-rl train --help` must not load torch / SB3 / ManiSkill / SAPIEN: it answers in a
    # fraction of a second instead of several. The parser is built and run in a fresh interpreter.
    code = ("import json, sys\n"
            "from gaze_rl import cli\n"
            "try:\n"
            f"    cli.parse({argv!r})\n"
            "except SystemExit:\n"
            "    pass\n"
            f"print(json.dumps({{m: m in sys.modules for m in {list(HEAVY)!r}}}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert not any(loaded.values()), f"{argv} loaded {[m for m, v in loaded.items() if v]}"


def test_python_m_gaze_rl_cli_train_help_answers():
    out = subprocess.run([sys.executable, "-m", "gaze_rl.cli", "train", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "--env-id" in out.stdout


def test_top_level_names_load_on_first_use():
    code = ("import sys, gaze_rl\n"
            "assert 'torch' not in sys.modules\n"
            "from gaze_rl import METHODS, ContrastiveConfig, EnvSpec\n"
            "assert 'torch' not in sys.modules, 'light names stay light'\n"
            "from gaze_rl import GazePPO, GazeSAC, GazeExtractor, gaze_policy_kwargs, make_vec_env\n"
            "assert set(gaze_rl.__all__) <= set(dir(gaze_rl))\n"
            "print(GazePPO.__name__, METHODS[0])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["GazePPO", "baseline"]
