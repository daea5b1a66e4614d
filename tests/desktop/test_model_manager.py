"""The model manager: the default pack plus the user models folder, cards shown, a pack chosen."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from desktop.main_window import MainWindow
from desktop.settings import Settings
from desktop.widgets.model_manager import list_packs

LOAD_MS = 60_000


def test_lists_default_and_user_packs_with_cards_and_reasons(tiny_pack_dir: Path, tmp_path: Path) -> None:
    default = Path(shutil.copytree(tiny_pack_dir, tmp_path / "default"))
    users = tmp_path / "models"
    other = Path(shutil.copytree(tiny_pack_dir, users / "b-other"))
    manifest = json.loads((other / "model.json").read_text())
    manifest["model_id"] = "other-model"
    manifest["card"]["training_data"] = "Kermany et al. (CC BY 4.0)"
    (other / "model.json").write_text(json.dumps(manifest))
    (users / "a-broken").mkdir()
    (users / "a-broken" / "model.json").write_text("{not json")
    (users / "c-not-a-pack").mkdir()  # no model.json: not listed

    entries = list_packs(default, users)
    assert [e.path for e in entries] == [default, users / "a-broken", other]
    assert entries[0].embedded and "embedded default" in entries[0].title
    assert "cannot be read as JSON" in entries[1].error and entries[1].card_text == ""
    assert entries[2].title == "other-model (fp32)" and entries[2].model_id == "other-model"
    assert entries[2].supported is None  # the card lists no supported_findings
    assert "Training data: Kermany et al. (CC BY 4.0)" in entries[2].card_text
    assert list_packs(tmp_path / "none", tmp_path / "none") == []


def test_choosing_a_pack_in_the_dialog_loads_it(qtbot, settings, tiny_pack_dir: Path, user_dirs: Path) -> None:
    users = user_dirs / "models"
    chosen = Path(shutil.copytree(tiny_pack_dir, users / "mine"))
    manifest = json.loads((chosen / "model.json").read_text())
    manifest["model_id"] = "mine"
    manifest["card"]["supported_findings"] = ["no_finding", "cardiomegaly", "pleural_effusion"]
    (chosen / "model.json").write_text(json.dumps(manifest))
    window = MainWindow(model=tiny_pack_dir, settings=Settings(settings))
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.model_info is not None, timeout=LOAD_MS)
    assert window.model_info.model_id != "mine"
    # the analyser names the installed pack that knows what the loaded one's card does not list
    window.prompt_box.set_card({**window.model_info.card, "supported_findings": ["no_finding", "pneumonia"]})
    window.prompt_box.set_text("Cardiomegaly. Right lower lobe pneumonia. No pneumothorax.")
    window.prompt_box.update_analysis()
    result = window.prompt_box.analysis_result()
    assert result["unsupported"] == ["Cardiomegaly"] and result["elsewhere"] == {"Cardiomegaly": ["mine"]}
    assert "Cardiomegaly is known by mine" in window.prompt_box.analysis.text()

    dialog = window.open_model_manager()  # the default pack is absent in tests: only "mine" is listed
    assert [e.path for e in dialog.entries] == [chosen]
    assert "Model: mine" in dialog.card.toPlainText()
    with qtbot.waitSignal(window.model_ready, timeout=LOAD_MS):
        dialog.use_button.click()
    assert window.model_info.model_id == "mine" and window.model_info.path == chosen
    assert not dialog.isVisible()
    window.close()
