"""Run the Debian DICOM validators from tests: dciodvfy / dcentvfy (dicom3tools) and dcmdump (dcmtk).

Each helper skips the calling test, with the reason, when its tool is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest

TIMEOUT_S = 60
_INSTALL_HINT = "./studio test installs it"


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} (Debian {package}) is not installed; {_INSTALL_HINT}")
    return path


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=TIMEOUT_S, check=False
    )


def _split(output: str) -> tuple[list[str], list[str]]:
    lines = [line.strip() for line in output.splitlines()]
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [line for line in lines if line.startswith("Warning")]
    return errors, warnings


def dciodvfy_output(path: str | os.PathLike[str]) -> str:
    """dciodvfy's whole report (stdout + stderr), verbatim."""
    result = _run([_tool("dciodvfy", "dicom3tools"), os.fspath(path)])
    return result.stdout + result.stderr


def dciodvfy_errors(path: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """(lines starting "Error", lines starting "Warning") of dciodvfy's IOD check of one file."""
    return _split(dciodvfy_output(path))


def dcentvfy_errors(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[str], list[str]]:
    """(errors, warnings) of dcentvfy's study/series/instance consistency check over several files."""
    result = _run([_tool("dcentvfy", "dicom3tools"), *(os.fspath(p) for p in paths)])
    return _split(result.stdout + result.stderr)


def dcmdump_ok(path: str | os.PathLike[str]) -> bool:
    """True when dcmtk's dcmdump reads the whole file without an error (exit 0, no "E:" lines)."""
    result = _run([_tool("dcmdump", "dcmtk"), os.fspath(path)])
    return result.returncode == 0 and not any(line.startswith("E:") for line in result.stderr.splitlines())


def tools_installed() -> bool:
    return all(shutil.which(name) for name in ("dciodvfy", "dcentvfy", "dcmdump"))


__all__ = ["dcentvfy_errors", "dciodvfy_errors", "dciodvfy_output", "dcmdump_ok", "tools_installed"]

if __name__ == "__main__":  # pragma: no cover - manual use: python -m tests.dicomtools FILE...
    import sys

    for name in sys.argv[1:]:
        print(f"== {Path(name).name}")
        print(dciodvfy_output(name), end="")
