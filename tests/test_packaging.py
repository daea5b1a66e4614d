"""Fast checks of the workstation package: the headless selftest and the PyInstaller spec (no build here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from desktop import selftest

REPO = Path(__file__).resolve().parents[1]
SUMMARY_PREFIX = "cxr-studio selftest: OK provider="


def test_selftest_on_the_tiny_pack_prints_one_summary_line(tiny_pack_dir: Path, capsys) -> None:
    code = selftest.main(["--selftest", "--model", str(tiny_pack_dir), "--provider", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith(SUMMARY_PREFIX + "CPUExecutionProvider")
    for field in ("model=cxr-tiny-seed0", "image=32x32", "dicom=explicit", "qt=", "load=", "generate=", "total="):
        assert field in line


def test_selftest_through_the_app_entry_point(tiny_pack_dir: Path, capsys) -> None:
    from desktop.app import main

    assert main(["--selftest", "--model", str(tiny_pack_dir), "--no-qt"]) == 0
    assert capsys.readouterr().out.startswith(SUMMARY_PREFIX)


def test_corrupt_pack_fails_with_a_one_line_reason(tiny_pack_copy: Path, capsys) -> None:
    unet = tiny_pack_copy / "unet.onnx"
    unet.write_bytes(unet.read_bytes()[:-100])
    code = selftest.main(["--model", str(tiny_pack_copy), "--no-qt"])
    out, err = capsys.readouterr()
    assert code == selftest.EXIT_FAILED
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("cxr-studio selftest: FAILED: model pack") and "unet.onnx" in err


def test_unreadable_manifest_fails(tiny_pack_copy: Path, capsys) -> None:
    (tiny_pack_copy / "model.json").write_text("{not json", encoding="utf-8")
    assert selftest.main(["--model", str(tiny_pack_copy), "--no-qt"]) == selftest.EXIT_FAILED
    assert "model.json" in capsys.readouterr().err


def test_missing_model_is_a_usage_error(tmp_path: Path, capsys) -> None:
    assert selftest.main(["--model", str(tmp_path / "nope"), "--no-qt"]) == selftest.EXIT_USAGE
    assert "no such folder" in capsys.readouterr().err


def test_selftest_never_imports_torch_or_training(tiny_pack_dir: Path) -> None:
    code = (
        "import sys\n"
        "from desktop.selftest import main\n"
        f"rc = main(['--model', {str(tiny_pack_dir)!r}, '--no-qt'])\n"
        "bad = sorted(m for m in ('torch', 'transformers', 'diffusers', 'training') if m in sys.modules)\n"
        "print('LOADED', bad)\n"
        "sys.exit(rc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "LOADED []" in run.stdout


# the spec and the bundle scan (the build itself runs in CI as `./studio package`)

PACKAGING = REPO / "packaging"


def _bundle_check():
    sys.path.insert(0, str(PACKAGING))
    try:
        import bundle_check
    finally:
        sys.path.remove(str(PACKAGING))
    return bundle_check


def test_spec_excludes_training_packages_and_unused_qt() -> None:
    spec = (PACKAGING / "cxr_studio.spec").read_text(encoding="utf-8")
    assert "excludes=EXCLUDES" in spec
    assert "forbidden_names(" in spec  # the spec refuses a collected torch before writing anything
    assert 'copy_metadata("cxr-studio")' in spec  # the GUI entry point is found through metadata
    assert "entry.py" in spec and "rthook_cuda.py" in spec
    excludes = set(_bundle_check().EXCLUDES)
    for name in ("torch", "transformers", "diffusers", "training", "onnx", "sympy", "scipy", "tests"):
        assert name in excludes
    for module in ("QtQml", "QtQuick", "QtWebEngineCore", "QtWebEngineWidgets"):
        assert f"PySide6.{module}" in excludes


def test_qt_translations_and_qml_are_dropped() -> None:
    drop = _bundle_check().QT_DROP
    assert drop.search("PySide6/Qt/translations/qtbase_de.qm")
    assert drop.search("PySide6/Qt/lib/libQt6Qml.so.6")
    assert drop.search("PySide6/Qt/qml/QtQuick/Controls")
    assert not drop.search("PySide6/Qt/plugins/platforms/libqxcb.so")
    assert not drop.search("PySide6/Qt/plugins/platforms/libqoffscreen.so")


def test_bundle_scan_finds_training_packages(tmp_path: Path) -> None:
    check = _bundle_check()
    clean = tmp_path / "clean"
    for rel in ("_internal/onnxruntime/capi/x.so", "_internal/engine/pipeline.pyc", "_internal/PySide6/Qt/lib/a.so"):
        (clean / rel).parent.mkdir(parents=True, exist_ok=True)
        (clean / rel).write_bytes(b"")
    assert check.scan_bundle(clean) == []
    dirty = tmp_path / "dirty"
    for rel in ("_internal/torch/lib/libc10.so", "_internal/transformers-5.0.dist-info/METADATA", "_internal/x.txt"):
        (dirty / rel).parent.mkdir(parents=True, exist_ok=True)
        (dirty / rel).write_bytes(b"")
    (dirty / "_internal" / "training").mkdir()
    found = check.scan_bundle(dirty)
    assert any(p.endswith("torch") for p in found)
    assert any("transformers-5.0.dist-info" in p for p in found)
    assert any(p.endswith("training") for p in found)
    assert check.forbidden_names(["torch.nn", "engine.cli", "diffusers"]) == ["torch.nn", "diffusers"]


def test_entry_script_freezes_and_runs_the_cli() -> None:
    entry = (PACKAGING / "entry.py").read_text(encoding="utf-8")
    assert "multiprocessing.freeze_support()" in entry
    assert "from engine.cli.main import main" in entry
    desktop_file = (PACKAGING / "linux" / "cxr-studio.desktop").read_text(encoding="utf-8")
    assert "Exec=cxr-studio" in desktop_file and "Icon=cxr-studio" in desktop_file
    assert (REPO / "resources" / "icons" / "cxr-studio.png").is_file()
