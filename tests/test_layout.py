"""The house plan: the core runs without nerfstudio, nothing imports a command, no import cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nvp_nerfstudio"
PLUGIN = PACKAGE / "plugin"
COMMANDS = PACKAGE / "scripts"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path) -> set[str]:
    """Our modules a file imports, at module level or inside functions (imports only a type checker sees are left out)."""
    tree = ast.parse(path.read_text())
    type_checking = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for statement in block.body
        for node in ast.walk(statement)
    }
    names = set()
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name in MODULES}


def test_every_module_outside_the_plugin_imports_without_nerfstudio() -> None:
    core = [name for name, path in MODULES.items() if PLUGIN not in path.parents and path.parent != PLUGIN]
    script = (
        "import sys\n"
        "sys.modules['nerfstudio'] = None  # any import of it now raises ImportError\n"
        f"for name in {core!r}:\n"
        "    __import__(name)\n"
        "print(len([m for m in sys.modules if m.startswith('nerfstudio')]))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "1"  # only the blocked placeholder
    assert len(core) > 30


def test_no_module_imports_a_command() -> None:
    offenders = {
        name: sorted(imported for imported in imported_modules(path) if MODULES[imported].parent == COMMANDS and imported != name)
        for name, path in MODULES.items()
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_no_import_cycle() -> None:
    graph = {name: imported_modules(path) - {name} for name, path in MODULES.items()}
    # A package's __init__ runs before its modules: a module importing its own package is no cycle.
    graph = {name: {other for other in targets if not name.startswith(other + ".")} for name, targets in graph.items()}
    done: set[str] = set()

    def cycle_from(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return path[path.index(name) :] + [name]
        if name in done:
            return None
        for target in sorted(graph[name]):
            if found := cycle_from(target, path + [name]):
                return found
        done.add(name)
        return None

    cycles = [found for name in sorted(graph) if (found := cycle_from(name, []))]
    assert cycles == []


def console_scripts() -> dict[str, str]:
    import tomllib

    return tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_command_builds_its_parser():
    """Each command's flags parse as the installed entry point builds them (tests call `main` with a config, which
    never builds the parser: a flag named twice broke `nvp-compare` for every user and no test saw it)."""
    code = "import importlib, sys; module, function = sys.argv[1].split(':'); sys.argv = [sys.argv[2], '--help']; getattr(importlib.import_module(module), function)()"
    for name, target in console_scripts().items():
        result = subprocess.run([sys.executable, "-c", code, target, name], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{name} --help: {result.stderr.strip().splitlines()[-1:]}"
        assert "--" in result.stdout, f"{name} --help printed no flags"
