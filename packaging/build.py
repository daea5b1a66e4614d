"""Build the workstation bundle ``dist/cxr-studio/`` with PyInstaller, check it, optionally selftest it.

    python packaging/build.py                       # build + scan (fails if torch & co. got in)
    python packaging/build.py --selftest-model PACK # ... and run the built binary's --selftest on PACK
    python packaging/build.py --selftest-tiny       # ... on a tiny pack built now (needs torch here)
    python packaging/build.py --selftest            # ... on the bundled default model, else a tiny pack (CI)

Run it with the Python of the environment to bundle: its onnxruntime (GPU or CPU build) is what the
bundle gets. Exit code non-zero with a one-line reason on any failure.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from bundle_check import scan_bundle  # noqa: E402

NAME = "cxr-studio"


def fail(message: str) -> int:
    print(f"build: FAILED: {message}", file=sys.stderr)
    return 1


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def which_onnxruntime() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for dist in ("onnxruntime-gpu", "onnxruntime"):
        with contextlib.suppress(PackageNotFoundError):
            found.append(f"{dist} {version(dist)}")
    return ", ".join(found) or "none"


def run_selftest(binary: Path, model: Path) -> tuple[int, str]:
    """The built binary, as a user would start it: outside the checkout, no display, no Qt platform set."""
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")}
    env.pop("PYTHONPATH", None)
    with tempfile.TemporaryDirectory(prefix="cxr-selftest-cwd-") as cwd:
        run = subprocess.run(
            [str(binary), "--selftest", "--model", str(model)],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    output = (run.stdout + run.stderr).strip()
    return run.returncode, output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=REPO / "dist", help="output folder (default dist/)")
    parser.add_argument("--work", type=Path, default=REPO / "build" / "pyinstaller", help="PyInstaller work folder")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--selftest-model", type=Path, metavar="PACK", help="selftest the bundle on this pack")
    group.add_argument("--selftest-tiny", action="store_true", help="selftest on a tiny pack built now (torch)")
    group.add_argument(
        "--selftest", action="store_true", help="selftest on the bundled default model if any, else as --selftest-tiny"
    )
    args = parser.parse_args(argv)
    default_model = REPO / "resources" / "models" / "default"
    if args.selftest and not default_model.is_dir():
        args.selftest_tiny = True

    # 1. PyInstaller (the spec itself refuses torch/transformers/diffusers/training)
    print(f"build: bundling with {sys.executable} ({which_onnxruntime()})", flush=True)
    t0 = time.perf_counter()
    command = [
        sys.executable, "-m", "PyInstaller", str(HERE / "cxr_studio.spec"), "--noconfirm", "--clean",
        "--log-level", "WARN", "--distpath", str(args.dist), "--workpath", str(args.work),
    ]  # fmt: skip
    if subprocess.run(command, cwd=REPO).returncode != 0:
        return fail("PyInstaller failed (see above)")
    bundle = args.dist / NAME
    build_s = time.perf_counter() - t0

    # 2. the Linux menu entry beside the binary
    if sys.platform.startswith("linux"):
        for name in ("cxr-studio.desktop", "install-desktop-entry.sh"):
            shutil.copy2(HERE / "linux" / name, bundle / name)

    # 3. scan what was written, not what was planned
    bad = scan_bundle(bundle)
    if bad:
        return fail(f"training-only packages ended up in {bundle}: {', '.join(bad[:10])}")
    size_mb = folder_size(bundle) / 2**20
    print(f"build: {bundle} {size_mb:.0f} MiB, built in {build_s:.0f} s; no torch/transformers/diffusers/training")

    # 4. the built binary's selftest
    model = args.selftest_model
    with tempfile.TemporaryDirectory(prefix="cxr-tiny-pack-") as tmp:
        if args.selftest_tiny:
            from training.tiny import build_tiny_pack

            model = build_tiny_pack(Path(tmp) / "pack", seed=0)
        if model is None:
            if not args.selftest:
                print("build: no selftest asked for (--selftest, --selftest-model PACK or --selftest-tiny)")
                return 0
            model = bundle / "_internal" / "resources" / "models" / "default"
        code, output = run_selftest(bundle / (NAME + (".exe" if os.name == "nt" else "")), model.resolve())
    print(output)
    if code != 0:
        return fail(f"the built binary's --selftest exited {code}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
