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
