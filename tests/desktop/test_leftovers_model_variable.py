"""CXR_STUDIO_MODEL named in the desktop's messages, as the command line names it (issue 17, item 11):
a main window, the model manager and the selftest started with the variable on a missing folder or a
folder that is not a pack say ``CXR_STUDIO_MODEL=VALUE: ...`` (the user may not know it is set)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from desktop import selftest
from desktop.main_window import MainWindow
from desktop.settings import Settings
from desktop.widgets.model_manager import ModelManager, list_packs

LOAD_MS = 30_000


def open_window(qtbot, settings) -> MainWindow:
    window = MainWindow(model=None, settings=Settings(settings))
    qtbot.addWidget(window)
    return window


def test_window_names_the_variable_when_its_folder_is_missing(qtbot, settings, tmp_path: Path, monkeypatch) -> None:
    missing = tmp_path / "nonexistent"
    monkeypatch.setenv("CXR_STUDIO_MODEL", str(missing))
    window = open_window(qtbot, settings)
    window.show()
    text = window.model_banner_label.text()
    assert window.model_banner.isVisible() and not window.generate_panel.generate_button.isEnabled()
    assert f"CXR_STUDIO_MODEL={missing}: no model pack there" in text, text
    assert "unset it for the embedded default model" in text
    window.close()


def test_window_names_the_variable_when_its_folder_is_not_a_pack(qtbot, settings, tmp_path: Path, monkeypatch) -> None:
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    monkeypatch.setenv("CXR_STUDIO_MODEL", str(empty))
    window = open_window(qtbot, settings)
    with qtbot.waitSignal(window.error_shown, timeout=LOAD_MS) as shown:
        window.show()
    assert shown.args[0] == "Model not loaded"
    assert shown.args[1].startswith(f"CXR_STUDIO_MODEL={empty}: "), shown.args[1]
    assert "model.json is missing" in shown.args[1]
    assert f"CXR_STUDIO_MODEL={empty}: " in window.model_banner_label.text()
    window.close()


def test_a_pack_opened_later_is_not_blamed_on_the_variable(
    qtbot, settings, tiny_pack_copy: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("CXR_STUDIO_MODEL", str(tmp_path / "nonexistent"))
    window = open_window(qtbot, settings)
    window.show()
    (tiny_pack_copy / "unet.onnx").write_bytes(b"not a model")
    with qtbot.waitSignal(window.error_shown, timeout=LOAD_MS) as shown:
        window.load_model(tiny_pack_copy)
    assert "unet.onnx" in shown.args[1] and "CXR_STUDIO_MODEL" not in shown.args[1]
    window.close()


def test_window_loads_the_variables_pack(qtbot, settings, tiny_pack_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("CXR_STUDIO_MODEL", str(tiny_pack_dir))
    window = open_window(qtbot, settings)
    with qtbot.waitSignal(window.model_ready, timeout=LOAD_MS):
        window.show()
    assert window.model_info.path == tiny_pack_dir and not window.errors
    window.close()


def test_model_manager_names_the_variable(qtbot, tiny_pack_dir: Path, tmp_path: Path, monkeypatch) -> None:
    missing = tmp_path / "nonexistent"
    monkeypatch.setenv("CXR_STUDIO_MODEL", str(missing))
    dialog = ModelManager(lambda path: None, None)
    qtbot.addWidget(dialog)
    assert f"CXR_STUDIO_MODEL={missing}: no model pack there" in dialog.variable_label.text()
    assert not dialog.variable_label.isHidden()

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text("{not json")
    monkeypatch.setenv("CXR_STUDIO_MODEL", str(broken))
    (entry,) = list_packs(user_folder=tmp_path / "no-user-models")
    assert entry.error.startswith(f"CXR_STUDIO_MODEL={broken}: ") and "cannot be read as JSON" in entry.error
    assert "CXR_STUDIO_MODEL" in entry.title and "embedded" not in entry.title

    good = Path(shutil.copytree(tiny_pack_dir, tmp_path / "good"))
    manifest = json.loads((good / "model.json").read_text())
    monkeypatch.setenv("CXR_STUDIO_MODEL", str(good))
    (entry,) = list_packs(user_folder=tmp_path / "no-user-models")
    assert (
        entry.title == f"{manifest['model_id']} ({manifest['precision']}) — from CXR_STUDIO_MODEL" and not entry.error
    )
    dialog = ModelManager(lambda path: None, None)
    qtbot.addWidget(dialog)
    assert dialog.variable_label.isHidden()


def test_selftest_names_the_variable(tmp_path: Path, monkeypatch, capsys) -> None:
    missing = tmp_path / "nonexistent"
    monkeypatch.setenv("CXR_STUDIO_MODEL", str(missing))
    assert selftest.main(["--no-qt"]) == selftest.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"cxr-studio selftest: FAILED: CXR_STUDIO_MODEL={missing}: no model pack there "
        "(unset it for the embedded default model, or pass --model PACK)"
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("CXR_STUDIO_MODEL", str(empty))
    assert selftest.main(["--no-qt"]) == selftest.EXIT_FAILED
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"cxr-studio selftest: FAILED: CXR_STUDIO_MODEL={empty}: "), err
    assert "model.json is missing" in err[0]
