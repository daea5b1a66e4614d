"""The DICOM tag panel (issue 18 item 3): tag, name, VR and value of the shown image's dataset, with a filter;
an opened file's own tags, or for a generated image the dataset the DICOM export would write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from desktop.widgets.tag_panel import TagPanel, show_tags
from engine.dicom.dataset import StudyContext, SyntheticImageInfo, build_dataset

RUN_MS = 120_000


@pytest.fixture
def panel(qtbot) -> TagPanel:
    panel = TagPanel()
    qtbot.addWidget(panel)
    panel.show()
    return panel


def test_the_panel_lists_tag_name_vr_and_value_and_filters_them(panel: TagPanel) -> None:
    pixels = np.full((40, 50), 30000, np.uint16)
    ds = build_dataset(pixels, SyntheticImageInfo(prompt="right pleural effusion"), StudyContext.synthetic())
    panel.set_dataset(ds, "generated")
    rows = panel.rows()
    assert ("(0028,0030)", "Pixel Spacing", "DS", "\\".join(str(v) for v in ds.PixelSpacing)) in rows
    assert ("(0018,1012)", "Date of Secondary Capture", "DA", str(ds.DateOfSecondaryCapture)) in rows
    assert any(row[0] == "(7FE0,0010)" and row[3] == "(4,000 bytes)" for row in rows)  # not 4,000 bytes of text
    # sequences are nested rows
    sequence = next(row for row in rows if row[1] == "Contributing Equipment Sequence")
    assert sequence[2] == "SQ" and sequence[3] == "1 item(s)"
    panel.filter_edit.setText("spacing")
    assert [row[1] for row in panel.rows()] == ["Pixel Spacing"]
    panel.filter_edit.setText("0008,0060")  # by tag number
    assert [row[1] for row in panel.rows()] == ["Modality"]
    panel.filter_edit.setText("effusion")  # by value: the prompt where the export writes it
    assert {row[1] for row in panel.rows()} >= {"Image Comments"}
    panel.filter_edit.setText("Code Meaning")  # inside a sequence: the sequence row stays to hold it
    names = [row[1] for row in panel.rows()]
    assert "Code Meaning" in names and "Contributing Equipment Sequence" in names
    panel.filter_edit.clear()
    assert len(panel.rows()) == len(rows)


def test_the_window_shows_an_opened_files_own_tags(loaded_window) -> None:
    from pydicom.data import get_testdata_file

    path = Path(get_testdata_file("RG1_UNCI.dcm", download=False))
    assert loaded_window.viewer.open_file(path)
    dialog = show_tags(loaded_window)
    ds = pydicom.dcmread(path)
    rows = dialog.panel.rows()
    assert ("(0008,0060)", "Modality", "CS", "CR") in rows
    assert ("(0008,0018)", "SOP Instance UID", "UI", ds.SOPInstanceUID) in rows
    assert ("(0002,0010)", "Transfer Syntax UID", "UI", ds.file_meta.TransferSyntaxUID) in rows
    assert str(path) in dialog.panel.title.text()


def test_the_window_shows_what_the_export_would_write_for_a_generated_image(qtbot, loaded_window) -> None:
    window = loaded_window
    window.generate_panel.steps_spin.setValue(3)
    window.prompt_box.set_text("Right pleural effusion")
    with qtbot.waitSignal(window.run_finished, timeout=RUN_MS):
        assert window.generate()
    assert not window.errors, window.errors
    dialog = show_tags(window)
    rows = {row[1]: row for row in dialog.panel.rows()}
    assert rows["Conversion Type"][3] == "SYN"
    spacing = window.viewer.view.calibration.spacing_mm
    assert rows["Pixel Spacing"][3] == "\\".join(f"{v:.6g}" for v in spacing)  # the ruler's spacing
    assert rows["Image Comments"][3].find(window.current.info.prompt[:20]) >= 0
    assert "export would write" in dialog.panel.title.text()
