"""`make-studies`: a killed run leaves no half-filled --out, and numeric options are refused, never replaced."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from engine.cli.main import main


def _command(*args: str) -> list[str]:
    exe = shutil.which("cxr-studio", path=str(Path(sys.executable).parent))
    assert exe, "the cxr-studio command is not installed in this environment"
    return [exe, *args]


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.dcm") if p.is_file())


def test_killed_make_studies_leaves_no_half_folder_and_reruns(tiny_pack_dir: Path, tmp_path: Path) -> None:
    """SIGKILL after a few studies: --out did hold those studies, and a rerun was refused ('must be a new
    or empty folder'). Now the studies are built in a hidden folder beside --out, renamed at the end."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Normal chest radiograph\nLeft pleural effusion\n")
    out = tmp_path / "studies"
    args = ["make-studies", "--count", "400", "--prompts", str(prompts), "--out", str(out), "--steps", "2",
            "--model", str(tiny_pack_dir), "--provider", "cpu"]  # fmt: skip
    process = subprocess.Popen(_command(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while len(_dicom_files(tmp_path)) < 3:  # the run is writing files, wherever it writes them
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < deadline, "make-studies wrote nothing in 120 s"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not out.exists() or not any(out.iterdir()), "a killed run left a half-filled --out"

    args[2] = "3"  # the same command, fewer studies: the folder is usable again
    done = subprocess.run(_command(*args), capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "note: .studies." in done.stderr and "may be left by a killed run" in done.stderr  # the kill's leftover
    files = _dicom_files(out)
    assert len(files) == 3
    assert {pydicom.dcmread(f).PatientID for f in files} == {p.name for p in out.iterdir()}
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~_umask())
    assert all(oct(p.stat().st_mode & 0o777) == oct(0o777 & ~_umask()) for p in out.iterdir())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_interrupted_make_studies_removes_its_staging_folder(
    tiny_pack_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl+C (or any error) part-way: nothing at --out and nothing beside it."""
    import engine.dicom.studies

    calls = []
    real = engine.dicom.studies.write_dicom

    def write_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.dicom.studies, "write_dicom", write_then_interrupt)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Normal chest radiograph\n")
    out = tmp_path / "studies"
    code = main(["make-studies", "--count", "3", "--prompts", str(prompts), "--out", str(out), "--steps", "1",
                 "--model", str(tiny_pack_dir), "--provider", "cpu"])  # fmt: skip
    assert code == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.txt"]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--steps", "0"], "--steps must be from 1 to 250, not 0"),
        (["--steps", "-3"], "--steps must be from 1 to 250, not -3"),
        (["--count", "0"], "--count must be from 1 to 100000, not 0"),
        (["--images-per-study", "0"], "--images-per-study must be from 1 to 16, not 0"),
        (["--seed", "-1"], "--seed must be"),
    ],
)
def test_bad_numbers_are_refused_not_replaced(tiny_pack_dir: Path, tmp_path: Path, capsys, option: list[str],
                                              message: str) -> None:  # fmt: skip
    """`--steps 0` was silently replaced by the model's default (``num_steps or default``)."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Normal chest radiograph\n")
    out = tmp_path / "studies"
    argv = ["make-studies", "--count", "2", "--prompts", str(prompts), "--out", str(out), "--steps", "1",
            "--model", str(tiny_pack_dir), "--provider", "cpu", *option]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.txt"]
