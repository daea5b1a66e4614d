"""The dataset explorer on a manifest made by the paediatric importer from the 12 committed fixture
radiographs: filters, the record's pixels in the viewer, comparison with a generated image (linked
window/level and zoom), bad lines and missing images, and a 5,000-record manifest that opens at once."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QKeySequence, QWheelEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from desktop.dataset import NO_LABEL, RecordFilter
from desktop.main_window import MainWindow
from desktop.settings import Settings
from desktop.widgets.dataset_explorer import DatasetExplorer
from desktop.widgets.linked_views import linked_window
from desktop.widgets.viewer import ImageView
from engine import imaging
from engine.findings.vocabulary import FINDINGS
from engine.manifest import ManifestRecord
from tests.desktop.test_dataset import write_png16
from training.data.importers.run import run_import

RUN_MS = 60_000


@pytest.fixture
def dataset(tmp_path: Path, pediatric_fixture_dir: Path) -> Path:
    """The fixture folder copied (a test may break an image), imported by the paediatric importer, plus two
    records written here: a 16-bit PNG with uncertain oedema and a lateral view with an effusion."""
    folder = Path(shutil.copytree(pediatric_fixture_dir, tmp_path / "pediatric-cxr"))
    manifest = tmp_path / "pediatric.jsonl"
    summary, _result = run_import("pediatric", [folder], manifest)
    assert len(summary.records) == 12
    gray = cv2.imread(str(folder / "images" / "IM-0005-0001.jpeg"), cv2.IMREAD_GRAYSCALE)
    ramp = np.arange(gray.size, dtype=np.uint32).reshape(gray.shape) % 256
    write_png16(tmp_path / "extra" / "sixteen.png", (gray.astype(np.uint32) * 256 + ramp).astype(np.uint16))
    extras = [
        ManifestRecord(
            image="extra/sixteen.png",
            text="PA chest radiograph: possible mild pulmonary oedema.",
            findings={"edema": "uncertain"},
            patient_id="X-1",
            view="PA",
            source="csv",
            split="val",
            age=7,
            sex="F",
        ),
        ManifestRecord(
            image=str(folder / "images" / "IM-0009-0001.jpeg"),
            text="Lateral view: small pleural effusion. Pneumonia cannot be excluded.",
            findings={"pleural_effusion": "present", "pneumonia": "uncertain"},
            patient_id="X-2",
            view="LATERAL",
            source="csv",
            split="test",
            label="other",
        ),
    ]
    with open(manifest, "a", encoding="utf-8") as stream:
        for record in extras:
            stream.write(record.validated().to_json() + "\n")
    return manifest


def manifest_lines(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture
def explorer(qtbot, settings):
    explorer = DatasetExplorer(Settings(settings))
    qtbot.addWidget(explorer)
    explorer.show()
    yield explorer
    explorer.close()
    assert explorer.model._pool.activeThreadCount() == 0


def open_dataset(qtbot, explorer: DatasetExplorer, manifest: Path) -> None:
    assert explorer.open_manifest(manifest)
    qtbot.waitUntil(lambda: explorer.model.scanned, timeout=10_000)


def record_index(explorer: DatasetExplorer, **fields: object) -> int:
    for index, record in enumerate(explorer.model.records):
        if all(getattr(record, key) == value for key, value in fields.items()):
            return index
    raise AssertionError(f"no record with {fields}")


def drag(widget, start: QPoint, end: QPoint) -> None:
    QTest.mousePress(widget, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    for k in range(1, 5):
        QTest.mouseMove(widget, start + (end - start) * (k / 4))
    QTest.mouseRelease(widget, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, end)


# 2. filters ---------------------------------------------------------------------------------------------


def test_filters_by_finding_status_split_view_label_source_and_text(
    qtbot, explorer: DatasetExplorer, dataset: Path, settings
) -> None:
    open_dataset(qtbot, explorer, dataset)
    lines = manifest_lines(dataset)
    assert explorer.shown_count() == len(lines) == 14
    assert explorer.count_label.text() == "14 of 14 records"
    assert explorer.problem_counts() == {"bad lines": 0, "missing": 0, "unreadable": 0}

    def count(**fields: str) -> int:
        explorer.set_filter(RecordFilter(**fields))
        return explorer.shown_count()

    # 1. by finding and status: labels.csv has 4 bacterial and 4 viral pneumonias, the extras one uncertain
    pneumonia = [line["findings"].get("pneumonia") for line in lines]
    assert count(finding="pneumonia", status="present") == 8 == pneumonia.count("present")
    assert count(finding="pneumonia", status="uncertain") == 1
    assert count(finding="pneumonia", status="absent") == pneumonia.count("absent")
    assert count(finding="pneumonia", status="not mentioned") == pneumonia.count(None)
    assert count(finding="bacterial_pneumonia") == 4 and count(finding="viral_pneumonia") == 4
    assert count(finding="edema", status="uncertain") == 1
    assert explorer.current_record().image == "extra/sixteen.png"  # the one record listed is shown
    # 2. by split, view, label and source, and combined
    splits = [line["split"] for line in lines]
    assert count(split="val") == splits.count("val") and count(split="train") == splits.count("train")
    assert count(view="LATERAL") == 1 and count(view="AP") == 12
    assert count(label="normal") == 4 and count(label=NO_LABEL) == 1 and count(source="csv") == 2
    train_pneumonia = sum(
        1 for line, p in zip(lines, pneumonia, strict=True) if line["split"] == "train" and p == "present"
    )
    assert count(finding="pneumonia", status="present", split="train") == train_pneumonia
    assert count(finding="pneumonia", status="present", label="normal") == 0
    assert explorer.current_record() is None and not explorer.real_view.has_image()
    # 3. free text: every word, any case, in the text, label, patient id or file
    assert count(text="VIRAL") == 4
    assert count(text="pleural effusion lateral") == 1
    assert count(text="X-1") == 1 and count(text="person1004") == 1
    assert count(text="effus") == sum("effusion" in line["text"].lower() for line in lines) > 1
    assert count(text="lateral") == 1 and count(text="bilateral") >= 1  # words match at their start only
    assert count(text="pneumonia bacterial") == 4  # "_" in labels and file names separates words

    # 4. through the controls: a finding chosen in its box, words typed in the search box
    explorer.clear_filters()
    assert explorer.shown_count() == 14 and not explorer.status_box.isEnabled()
    box = explorer.finding_box
    counts = ", ".join(f"{pneumonia.count(s)} {s}" for s in ("present", "uncertain", "absent") if pneumonia.count(s))
    assert box.itemText(box.findData("pneumonia")) == f"Pneumonia ({counts})"
    assert box.findData("atelectasis") == -1  # only findings the manifest names are offered
    box.setCurrentIndex(box.findData("pneumonia"))
    box.activated.emit(box.currentIndex())
    assert explorer.shown_count() == 8 and explorer.count_label.text() == "8 of 14 records"
    assert explorer.status_box.isEnabled()
    QTest.keyClicks(explorer.search_edit, "bacterial")
    qtbot.waitUntil(lambda: explorer.shown_count() == 4, timeout=5_000)
    shown = [explorer.model.records[i] for i in explorer.model.visible_indices()]
    assert {record.label for record in shown} == {"bacterial_pneumonia"}
    assert explorer.current_record() in shown

    # 5. sorting by a column keeps the shown record selected
    explorer.clear_filters()
    current = explorer.current_index
    explorer.table.sortByColumn(3, Qt.SortOrder.AscendingOrder)  # label
    labels = [explorer.model.records[i].label or "" for i in explorer.model.visible_indices()]
    assert labels == sorted(labels)
    assert explorer.current_index == current
    assert explorer.model.record_index(explorer.table.currentIndex().row()) == current

    # 6. the manifest is remembered
    assert Settings(settings).last_manifest == str(dataset.resolve())
    again = DatasetExplorer(Settings(settings))
    qtbot.addWidget(again)
    assert again.open_last() and again.shown_count() == 14
    again.close()


# 3. the record's image, text and findings ----------------------------------------------------------------


def test_selected_record_shows_its_pixels_text_findings_and_thumbnail(
    qtbot, explorer: DatasetExplorer, dataset: Path
) -> None:
    open_dataset(qtbot, explorer, dataset)
    lines = manifest_lines(dataset)
    assert explorer.current_index == 0  # the first record is shown on opening

    # 1. an 8-bit JPEG: the viewer holds its grey pixels widened to 16 bits
    index = record_index(explorer, patient_id="P1004")
    assert explorer.select_record(index)
    path = dataset.parent / lines[index]["image"]  # relative to the manifest
    expected = imaging.rescale_bits(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), 8, 16)
    np.testing.assert_array_equal(explorer.real_view.source, expected)
    assert explorer.detail.text_view.toPlainText() == lines[index]["text"]
    findings = lines[index]["findings"]
    assert explorer.findings_rows() == [(FINDINGS[name], findings[name]) for name in FINDINGS if name in findings]
    assert "person1004_bacteria_2935.jpeg" in explorer.real_view.label
    assert explorer.real_view.mark == "REAL · pediatric"  # a dataset image never carries the SYNTHETIC mark
    assert "P1004" in explorer.detail.info_label.text() and not explorer.image_message.isVisible()

    # 2. a 16-bit PNG: exactly its stored values
    sixteen = record_index(explorer, patient_id="X-1")
    explorer.select_record(sixteen)
    stored = cv2.imread(str(dataset.parent / "extra" / "sixteen.png"), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == np.uint16
    np.testing.assert_array_equal(explorer.real_view.source, stored)
    assert explorer.findings_rows() == [(FINDINGS["edema"], "uncertain")]
    assert "Age</b> 7" in explorer.detail.info_label.text()

    # 3. the arrow key moves to the next row and shows that record
    explorer.table.setFocus()
    row = explorer.model.row_of(sixteen)
    QTest.keyClick(explorer.table, Qt.Key.Key_Up)
    assert explorer.current_index == explorer.model.record_index(row - 1) != sixteen

    # 4. thumbnails arrive for the rows on screen
    first = explorer.model.record_index(0)
    qtbot.waitUntil(lambda: explorer.model.thumbnail(first) is not None, timeout=10_000)
    image = explorer.model.thumbnail(first).toImage()
    assert max(image.width(), image.height()) <= 48 and image.width() >= 40
    values = {image.pixelColor(x, y).value() for x in range(0, image.width(), 4) for y in range(0, image.height(), 4)}
    assert len(values) > 10  # a picture, not the flat "loading" tile


# 4. comparison with a generated image --------------------------------------------------------------------


@pytest.fixture
def window(loaded_window: MainWindow):
    return loaded_window


def test_compare_shows_real_and_generated_with_linked_window_level(
    qtbot, window: MainWindow, dataset: Path, settings
) -> None:
    # 1. File > Dataset explorer… reopens the last manifest
    Settings(settings).last_manifest = str(dataset)
    file_menu = window.menuBar().actions()[0].menu()
    assert window.dataset_action in file_menu.actions()
    window.dataset_action.trigger()
    explorer = window.dataset_explorer
    assert explorer is not None and explorer.isVisible() and explorer.shown_count() == 14
    qtbot.waitUntil(lambda: explorer.model.scanned, timeout=10_000)

    # 2. nothing generated yet: a clear message, no comparison
    index = record_index(explorer, patient_id="P1040")
    explorer.select_record(index)
    assert not explorer.compare_with_current() and not explorer.comparing()
    assert explorer.errors[-1].startswith("No generated image")

    # 3. generate in the main window, then "Compare with current image"
    window.generate_panel.steps_spin.setValue(2)
    window.generate_panel.seed_edit.setText("3")
    window.generate_panel.seed_lock.setChecked(True)
    window.prompt_box.set_text("Normal chest radiograph")
    with qtbot.waitSignal(window.run_finished, timeout=RUN_MS):
        assert window.generate()
    QTest.mouseClick(explorer.compare_current_button, Qt.MouseButton.LeftButton)
    assert explorer.comparing() and explorer.generated_view.isVisible()
    real, generated = explorer.real_view, explorer.generated_view
    np.testing.assert_array_equal(generated.source, window.current.pixels)
    assert generated.source.shape == (32, 32) and real.source.shape == (224, 224)
    assert real.window() == default_window(real) and generated.window() == default_window(generated)

    def linked() -> tuple[float, float]:
        """The generated side's window for the real side's, in each image's own units."""
        return linked_window(default_window(real), default_window(generated), *real.window())

    assert real.mark.startswith("REAL") and not hasattr(generated, "mark")  # the generated side says SYNTHETIC

    # 4. window/level is linked (in each image's own units), whichever side is dragged or a preset is chosen
    qtbot.waitUntil(lambda: generated.width() > 100, timeout=5_000)
    before = real.window()
    middle = QPoint(real.width() // 2, real.height() // 2)
    drag(real, middle, middle + QPoint(60, 40))
    assert real.window() != before and generated.window() == pytest.approx(linked())
    middle = QPoint(generated.width() // 2, generated.height() // 2)
    drag(generated, middle, middle + QPoint(-30, -50))
    assert generated.window() == pytest.approx(linked())
    assert f"W {generated.shown_window()[1]:.0f}" in generated.overlay_lines()[0]  # in the exported image's units
    explorer.preset_box.setCurrentIndex(explorer.preset_box.findData("LUNG"))
    explorer.preset_box.activated.emit(explorer.preset_box.currentIndex())
    for view in (real, generated):
        lung = next(p for p in view.presets() if p.name == "LUNG")
        assert view.window() == (lung.window_center, lung.window_width)

    # 5. invert and zoom follow too (zoom scaled by the widths, so both images stay the same size on screen)
    plain = generated.displayed_pixels().copy()
    explorer.invert_box.setChecked(True)
    assert real.options().invert and generated.options().invert
    np.testing.assert_array_equal(generated.displayed_pixels(), 255 - plain)
    explorer.fit()
    point = QPointF(real.width() / 2, real.height() / 2)
    wheel = QWheelEvent(point, real.mapToGlobal(point), QPoint(0, 0), QPoint(0, 240), Qt.MouseButton.NoButton,
                        Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)  # fmt: skip
    QApplication.sendEvent(real, wheel)
    assert real.zoom() > 1.0
    assert generated.zoom() == pytest.approx(real.zoom() * 224 / 32)
    assert generated.offset() == real.offset()

    # 6. "Generate from this text": the record's text with the window's settings, shown on the right
    record = explorer.current_record()
    with qtbot.waitSignal(window.generation_done, timeout=RUN_MS) as done:
        QTest.mouseClick(explorer.generate_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.is_running(), timeout=RUN_MS)
    assert done.args[0].request.prompt == record.text
    np.testing.assert_array_equal(generated.source, done.args[0].to_uint16()[0])
    assert generated.window() == pytest.approx(linked())
    # a generation the explorer did not ask for leaves its comparison alone
    shown = generated.source.copy()
    window.generate_panel.seed_edit.setText("4")
    with qtbot.waitSignal(window.run_finished, timeout=RUN_MS):
        window.generate()
    np.testing.assert_array_equal(generated.source, shown)

    # 7. close the comparison; closing the main window closes the explorer and its loader
    QTest.mouseClick(explorer.close_compare_button, Qt.MouseButton.LeftButton)
    assert not explorer.comparing()
    window.close()
    assert not explorer.isVisible() and explorer.model._pool.activeThreadCount() == 0


# 4b. linked window/level between images of different ranges, and closing ------------------------------


def bright_synthetic(size: int = 64) -> np.ndarray:
    """A generated-looking image whose pixels sit high in the 16-bit range (52,000..64,000), where a
    window taken from an 8-bit JPEG widened to 16 bits puts everything at white."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(52_000, 62_000, size)[None, :] + np.linspace(0, 2_000, size)[:, None]
    return np.clip(ramp + rng.normal(0, 300, (size, size)), 0, 65_535).astype(np.uint16)


def default_window(view: ImageView) -> tuple[float, float]:
    preset = view.presets()[0]
    assert preset.name == "DEFAULT"
    return preset.window_center, preset.window_width


def white_fraction(view: ImageView) -> float:
    return float((view.displayed_pixels() == 255).mean())


def contrast(view: ImageView) -> float:
    return float(view.displayed_pixels().astype(np.float64).std())


def test_linked_window_is_in_units_of_each_images_default_window() -> None:
    # the source's own default maps to the target's own default, exactly
    assert linked_window((30_000.0, 50_000.0), (57_000.0, 8_000.0), 30_000.0, 50_000.0) == (57_000.0, 8_000.0)
    # half the width and the centre a tenth of a width higher: the same on the target, in its units
    assert linked_window((30_000.0, 50_000.0), (57_000.0, 8_000.0), 35_000.0, 25_000.0) == pytest.approx(
        (57_800.0, 4_000.0)
    )


def test_linked_window_level_keeps_both_images_visible_and_reset_restores_each_default(
    qtbot, explorer: DatasetExplorer, dataset: Path
) -> None:
    open_dataset(qtbot, explorer, dataset)
    assert explorer.select_record(record_index(explorer, patient_id="P1040"))  # a real 8-bit JPEG
    explorer.set_generated(bright_synthetic(), "seed 1 · synthetic")
    qtbot.waitUntil(lambda: explorer.generated_view.width() > 100, timeout=5_000)
    real, generated = explorer.real_view, explorer.generated_view
    real_default, generated_default = default_window(real), default_window(generated)
    assert real_default != generated_default  # the two images' ranges differ

    # 1. side by side, each image starts at its own default window, and neither is washed out
    assert real.window() == real_default and generated.window() == generated_default
    assert white_fraction(generated) < 0.2 and contrast(generated) > 30  # 83 % white before: the JPEG's window

    # 2. dragging W/L on the real image moves the synthetic one by the same amount in its own units
    middle = QPoint(real.width() // 2, real.height() // 2)
    drag(real, middle, middle + QPoint(40, 30))
    assert real.window() != real_default
    assert generated.window() == pytest.approx(linked_window(real_default, generated_default, *real.window()))
    assert white_fraction(generated) < 0.5 and contrast(generated) > 20

    # 3. Reset W/L gives each image its own default window back
    QTest.mouseClick(explorer.reset_button, Qt.MouseButton.LeftButton)
    assert real.window() == real_default and generated.window() == generated_default
    assert white_fraction(generated) < 0.2 and contrast(generated) > 30

    # 4. dragging the synthetic side moves the real one, in the real image's units
    middle = QPoint(generated.width() // 2, generated.height() // 2)
    drag(generated, middle, middle + QPoint(-30, -20))
    assert generated.window() != generated_default
    assert real.window() == pytest.approx(linked_window(generated_default, real_default, *generated.window()))
    assert contrast(real) > 20

    # 5. a preset sets each image to its own window of that name; R on either view resets both
    explorer.preset_box.setCurrentIndex(explorer.preset_box.findData("LUNG"))
    explorer.preset_box.activated.emit(explorer.preset_box.currentIndex())
    for view in (real, generated):
        lung = next(p for p in view.presets() if p.name == "LUNG")
        assert view.window() == (lung.window_center, lung.window_width)
    QTest.keyClick(generated, Qt.Key.Key_R)
    assert real.window() == real_default and generated.window() == generated_default

    # 6. a new record: its own default, and the synthetic image at its own default too
    drag(real, middle, middle + QPoint(50, 0))
    assert explorer.select_record(record_index(explorer, patient_id="X-1"))
    assert real.window() == default_window(real) and generated.window() == generated_default


def test_generate_from_this_text_hands_the_host_the_record_text_only(
    qtbot, explorer: DatasetExplorer, dataset: Path
) -> None:
    """The host gets the text and nothing else; it decides the rest (one image, its own settings)."""
    calls: list[tuple[tuple[object, ...], dict[str, object]]] = []

    def generate_text(*args: object, **kwargs: object) -> bool:
        calls.append((args, kwargs))
        return True

    open_dataset(qtbot, explorer, dataset)
    explorer.set_host(None, generate_text)
    assert explorer.select_record(record_index(explorer, patient_id="X-2"))
    QTest.mouseClick(explorer.generate_button, Qt.MouseButton.LeftButton)
    record = explorer.current_record()
    assert calls == [((record.text,), {})] and isinstance(calls[0][0][0], str)
    # its answer comes back through generated(), beside the record, at its own default window
    explorer.generated(bright_synthetic(), "seed 9")
    assert explorer.comparing() and explorer.generated_view.window() == default_window(explorer.generated_view)
    explorer.generation_ended()
    explorer.generated(bright_synthetic(32), "seed 10")  # not asked for: the comparison stays
    assert explorer.generated_view.source.shape == (64, 64)


@pytest.mark.parametrize("how", ["button", "escape", "close shortcut"])
def test_the_explorer_closes_with_its_button_esc_and_the_close_shortcut(
    qtbot, explorer: DatasetExplorer, dataset: Path, how: str
) -> None:
    open_dataset(qtbot, explorer, dataset)
    explorer.activateWindow()
    qtbot.waitUntil(explorer.isActiveWindow, timeout=5_000)
    assert explorer.isVisible()
    if how == "button":
        assert explorer.close_button.text() == "Close"
        QTest.mouseClick(explorer.close_button, Qt.MouseButton.LeftButton)
    elif how == "escape":
        QTest.keyClick(explorer.table, Qt.Key.Key_Escape)
    else:
        sequence = QKeySequence(QKeySequence.StandardKey.Close)  # Ctrl+W, Cmd+W on macOS
        assert not sequence.isEmpty()
        combination = sequence[0]
        QTest.keyClick(explorer.table, combination.key(), combination.keyboardModifiers())
    qtbot.waitUntil(lambda: not explorer.isVisible(), timeout=5_000)
    assert explorer.model._pool.activeThreadCount() == 0


# 5. errors ----------------------------------------------------------------------------------------------


def test_bad_lines_missing_and_unreadable_images_are_reported_and_counted(
    qtbot, explorer: DatasetExplorer, dataset: Path
) -> None:
    images = dataset.parent / "pediatric-cxr" / "images"
    (images / "person101_bacteria_486.jpeg").unlink()
    (images / "person104_virus_191.jpeg").chmod(0o644)
    (images / "person104_virus_191.jpeg").write_bytes(b"not a jpeg at all")
    with open(dataset, "a", encoding="utf-8") as stream:
        stream.write('{"image": "x.png", "text": \n')  # line 15
        stream.write(json.dumps({**manifest_lines(dataset)[0], "findings": {"pneumonitis": "present"}}) + "\n")

    # 1. the good records open; the bad lines are named in a dialog and counted
    assert explorer.open_manifest(dataset)
    assert explorer.shown_count() == 14
    assert explorer.errors and explorer.errors[-1].startswith("Manifest lines skipped")
    assert (
        "line 15: not JSON" in explorer.errors[-1] and "line 16: unknown finding 'pneumonitis'" in explorer.errors[-1]
    )
    assert explorer._boxes and explorer._boxes[-1].isVisible()  # shown without blocking

    # 2. the background check counts the missing file; its row says so
    qtbot.waitUntil(lambda: explorer.model.scanned, timeout=10_000)
    counts = explorer.problem_counts()  # the unreadable file may or may not have been met by its thumbnail yet
    assert (counts["bad lines"], counts["missing"]) == (2, 1)
    assert "2 bad manifest line(s) skipped" in explorer.problems_label.text()
    assert "1 image file(s) missing" in explorer.problems_label.text()
    missing = record_index(explorer, patient_id="P101")
    row = explorer.model.row_of(missing)
    assert explorer.model.data(explorer.model.index(row, 0)).endswith("(missing)")

    # 3. selecting it shows a placeholder naming the path, and a message
    explorer.select_record(missing)
    path = explorer.model.paths[missing]
    assert not explorer.real_view.has_image() and str(path) in explorer.real_view.label
    assert explorer.image_message.isVisible() and str(path) in explorer.image_message.text()
    assert explorer.current_record().patient_id == "P101" and explorer.findings_rows()  # text and findings still shown

    # 4. a file that is there but does not decode: counted as unreadable, with the reason
    broken = record_index(explorer, patient_id="P104")
    explorer.select_record(broken)
    assert not explorer.real_view.has_image()
    assert "cannot be shown" in explorer.image_message.text() and "decode" in explorer.image_message.text()
    assert explorer.problem_counts() == {"bad lines": 2, "missing": 1, "unreadable": 1}
    problems = explorer.problems_text()
    assert "line 15" in problems and str(path) in problems and "person104_virus_191.jpeg" in problems

    # 5. another good record still shows; a missing manifest is an error that changes nothing
    explorer.select_record(record_index(explorer, patient_id="P1004"))
    assert explorer.real_view.has_image() and not explorer.image_message.isVisible()
    assert not explorer.open_manifest(dataset.parent / "gone.jsonl")
    assert explorer.errors[-1].startswith("Manifest not opened") and "no such file" in explorer.errors[-1]
    assert explorer.shown_count() == 14 and explorer.loaded.path == dataset


# 6. a large manifest ------------------------------------------------------------------------------------


def test_five_thousand_records_open_at_once_and_load_only_visible_thumbnails(
    qtbot, explorer: DatasetExplorer, tmp_path: Path, pediatric_fixture_dir: Path
) -> None:
    images = sorted((pediatric_fixture_dir / "images").iterdir())
    lines = [
        ManifestRecord(
            image=str(images[i % len(images)]), text=f"Record {i}: " + ("pneumonia" if i % 3 else "normal study"),
            findings={"pneumonia": "present"} if i % 3 else {"no_finding": "present"}, patient_id=f"P{i}",
            view="AP", source="csv", split=("train", "val", "test")[i % 3],
        ).to_json()
        for i in range(5000)
    ]  # fmt: skip
    manifest = tmp_path / "big.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")

    started = time.perf_counter()
    assert explorer.open_manifest(manifest)
    QApplication.processEvents()  # the table paints its first rows
    elapsed = time.perf_counter() - started
    assert explorer.shown_count() == 5000
    assert elapsed < 3.0, f"opening 5,000 records took {elapsed:.2f} s"  # about 0.2 s on this 2-core machine

    # only the rows on screen asked for a thumbnail
    qtbot.waitUntil(lambda: explorer.model.thumbnail(0) is not None, timeout=10_000)
    visible = explorer.table.viewport().height() // explorer.table.verticalHeader().defaultSectionSize() + 2
    assert 0 < explorer.model.thumbnail_requests <= visible
    explorer.table.scrollToBottom()
    QApplication.processEvents()
    qtbot.waitUntil(lambda: explorer.model.thumbnail(4999) is not None, timeout=10_000)
    assert explorer.model.thumbnail_requests <= 2 * visible
    assert explorer.model.thumbnail(2500) is None

    # filtering 5,000 records is immediate too
    started = time.perf_counter()
    explorer.set_filter(RecordFilter(finding="pneumonia", split="val"))
    assert time.perf_counter() - started < 1.0
    assert explorer.shown_count() == sum(1 for i in range(5000) if i % 3 == 1)
