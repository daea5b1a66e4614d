#!/usr/bin/env bash
# Build dist/cxr-studio/ with the checkout's .venv (or $PYTHON); arguments go to packaging/build.py.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
"$python" -m PyInstaller --version >/dev/null 2>&1 || "$python" -m pip install -q "pyinstaller>=6,<7"
exec "$python" packaging/build.py "$@"
