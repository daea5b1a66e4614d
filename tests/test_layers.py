"""The import direction desktop -> engine <- training, checked in fresh interpreters."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_ENGINE = ("torch", "PySide6", "training", "desktop", "transformers", "diffusers")


ENGINE_MODULES = sorted(
    ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
    for p in (REPO / "engine").rglob("*.py")
    if p.stem != "__main__"
)


@pytest.mark.parametrize("module", ENGINE_MODULES)
def test_engine_modules_import_without_torch_or_qt(module: str) -> None:
    code = (
        f"import sys, {module}\nbad = [m for m in {FORBIDDEN_IN_ENGINE!r} if m in sys.modules]\nprint(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "", f"{module} pulled in {out.stdout.strip()}"


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("engine", {"torch", "PySide6", "training", "desktop", "transformers", "diffusers"}),
        ("desktop", {"torch", "training", "transformers", "diffusers"}),
    ],
)
def test_no_source_file_imports_across_layers(package: str, forbidden: set[str]) -> None:
    """Static check, so a lazy import inside a function cannot hide a wrong direction."""
    offenders = {
        str(path.relative_to(REPO)): sorted(_imported_roots(path) & forbidden)
        for path in (REPO / package).rglob("*.py")
        if _imported_roots(path) & forbidden
    }
    assert offenders == {}


# --- the rooms inside the packages (issue 19) -------------------------------------------------------

PACKAGES = ("engine", "desktop", "training")
GENERATION_CORE = sorted(
    f"engine.{p.stem}" for p in (REPO / "engine").glob("*.py") if p.stem not in ("__init__", "__main__")
)


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def _project_modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in (REPO / package).rglob("*.py")
        if path.stem != "__main__"
    }


def _imports_of(path: Path, modules: dict[str, Path], own: str | None = None) -> set[str]:
    """Project modules ``path`` imports anywhere in it (lazy imports inside functions included).

    ``from a.b import c`` names the module ``a.b.c`` when that is a module, else ``a.b``; a relative
    import is resolved against the file's package."""
    own = own or _module_name(path)
    package = own if path.stem == "__init__" else own.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != own:
                found.add(name)
    return found


def _import_graph() -> dict[str, set[str]]:
    modules = _project_modules()
    return {name: _imports_of(path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check below can fail: a two-module and a three-module circle are found, a chain is not."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"g"}, "g": set()}
    assert sorted(_cycles(graph)) == [["a", "b"], ["c", "d", "e"]]


def test_the_import_graph_sees_lazy_relative_and_submodule_imports(tmp_path: Path) -> None:
    modules = dict.fromkeys(["engine", "engine.cli", "engine.cli.main", "engine.cli.dicom", "engine.pack"], tmp_path)
    source = tmp_path / "main.py"
    lines = ["import engine.pack", "def f():", "    from engine.cli import dicom", "    from . import main"]
    lines.append("    from .dicom import x")
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert _imports_of(source, modules, own="engine.cli.main") == {"engine.pack", "engine.cli.dicom"}


def test_no_import_circles_between_modules() -> None:
    assert _cycles(_import_graph()) == []


def test_the_generation_core_never_imports_dicom_or_the_command_line() -> None:
    graph = _import_graph()
    offenders = {
        module: sorted(t for t in graph[module] if t.startswith(("engine.dicom", "engine.cli")))
        for module in GENERATION_CORE
    }
    assert {m: t for m, t in offenders.items() if t} == {}


def test_only_the_command_line_imports_the_command_line() -> None:
    """desktop, training and the rest of engine reach the card text and the model choice through
    engine.pack; nothing outside engine/cli imports it (packaging's entry point only starts it)."""
    graph = _import_graph()
    offenders = {
        module: sorted(t for t in targets if t == "engine.cli" or t.startswith("engine.cli."))
        for module, targets in graph.items()
        if not module.startswith("engine.cli")
    }
    assert {m: t for m, t in offenders.items() if t} == {}
