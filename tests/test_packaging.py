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
