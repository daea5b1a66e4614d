"""Send to PACS from the window: C-ECHO test and C-STORE of the current image to a real dcmtk storescp."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest

from desktop.exports import CurrentImage
from desktop.main_window import MainWindow
from desktop.settings import Settings
from desktop.widgets import pacs_dialog
from engine.dicom.dataset import SyntheticImageInfo, write_dicom
from engine.dicom.outbox import Outbox
from engine.dicom.pacs import PacsNode

pytest.importorskip("pynetdicom")

from tests.pacs_servers import black_hole, free_port, storescp

RUN_MS = 60_000


@pytest.fixture
def window(qtbot, settings, tiny_pack_dir: Path):
    window = MainWindow(model=tiny_pack_dir, settings=Settings(settings))
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.model_info is not None, timeout=RUN_MS)
    window.generate_panel.steps_spin.setValue(2)
    window.prompt_box.set_text("Normal chest radiograph")
    with qtbot.waitSignal(window.run_finished, timeout=RUN_MS):
        window.generate()
    yield window
    window.close()


def fill(dialog, port: int, called: str = "TESTSCP") -> None:
    dialog.name_edit.setText("test scp")
    dialog.host_edit.setText("127.0.0.1")
    dialog.port_spin.setValue(port)
    dialog.called_edit.setText(called)


def test_echo_and_send_the_current_image(qtbot, window: MainWindow, tmp_path: Path) -> None:
    assert window.send_pacs_action.isVisible()
    window.open_pacs_dialog()
    dialog = window.pacs_dialog
    with storescp(tmp_path / "scp") as scp:
        fill(dialog, scp.port, scp.aet)
        with qtbot.waitSignal(dialog.echo_done, timeout=RUN_MS) as echoed:
            dialog.echo_button.click()
        assert echoed.args[0].ok and "answered C-ECHO" in dialog.status.text()
        dialog.save_node()
        with qtbot.waitSignal(dialog.send_done, timeout=RUN_MS) as sent:
            dialog.send_button.click()
        report = sent.args[0]
        assert report.ok and report.sent == 1, report.summary()
        qtbot.waitUntil(lambda: len(scp.files()) == 1, timeout=10_000)
        ds = pydicom.dcmread(scp.files()[0])
        assert ds.ConversionType == "SYN" and "Normal chest radiograph" in ds.ImageComments
    assert dialog.outbox.pending() == []
    assert [n["name"] for n in Settings(window.settings.store).pacs_nodes()] == ["test scp"]


def test_failures_say_what_happened_and_keep_the_image(qtbot, window: MainWindow) -> None:
    window.open_pacs_dialog()
    dialog = window.pacs_dialog
    fill(dialog, free_port())  # nothing listens there
    with qtbot.waitSignal(dialog.echo_done, timeout=RUN_MS) as echoed:
        dialog.echo_button.click()
    assert not echoed.args[0].ok and "127.0.0.1" in dialog.status.text()
    with black_hole() as port:
        fill(dialog, port)
        dialog.called_edit.setText("BAD AE\\")
        dialog.send_button.click()
        assert "AE title" in dialog.status.text() and dialog.outbox.pending() == []
    fill(dialog, free_port())
    dialog.retries, dialog.backoff_s = 1, 0.05
    with qtbot.waitSignal(dialog.send_done, timeout=RUN_MS) as sent:
        dialog.send_button.click()
    assert not sent.args[0].ok
    assert len(dialog.outbox.pending()) == 1 and "Send pending" in dialog.status.text()


def test_send_pending_counts_and_sends_only_the_chosen_nodes_queue(qtbot, window: MainWindow, tmp_path: Path) -> None:
    # left by earlier sends: two images for another node, one for the saved node the dialog opens on
    outbox = Outbox()
    image = write_dicom(window.current_dataset(), tmp_path / "image.dcm")
    outbox.put(image, "other pacs")
    second = pydicom.dcmread(image)
    second.SOPInstanceUID = second.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    outbox.put(write_dicom(second, tmp_path / "second.dcm"), "other pacs")
    outbox.put(image, "test scp")
    with storescp(tmp_path / "scp") as scp:
        node = PacsNode(name="test scp", host="127.0.0.1", port=scp.port, called_ae_title=scp.aet)
        window.settings.set_pacs_nodes([node.to_dict()])
        window.open_pacs_dialog()
        dialog = window.pacs_dialog
        assert dialog.name_edit.text() == "test scp"
        assert dialog.pending_button.text() == "Send pending (1)"
        assert "2 other image(s) wait for other nodes" in dialog.pending_button.toolTip()
        with qtbot.waitSignal(dialog.send_done, timeout=RUN_MS) as sent:
            dialog.pending_button.click()
        assert sent.args[0].ok and sent.args[0].sent == 1, sent.args[0].summary()
        qtbot.waitUntil(lambda: len(scp.files()) == 1, timeout=10_000)
    assert outbox.pending("test scp") == [] and len(outbox.pending("other pacs")) == 2
    status = dialog.status.text()
    assert "2 image(s) in the outbox wait for other nodes" in status and "try again" not in status, status
    assert dialog.pending_button.text() == "Send pending"
    dialog.name_edit.setText("other pacs")  # the fields name the node: the count follows them
    assert dialog.pending_button.text() == "Send pending (2)"
    dialog.name_edit.setText("third node")
    dialog.pending_button.click()  # nothing for it: said at once, nothing sent anywhere
    assert "Nothing waits to be sent to" in dialog.status.text() and "2 image(s)" in dialog.status.text()
    assert len(outbox.pending("other pacs")) == 2


def test_the_dialog_takes_what_it_needs_from_its_opener_and_never_imports_the_main_window(
    qtbot, settings, tmp_path: Path
) -> None:
    """It reached into the window's settings, tasks and dataset (and imported main_window for that)."""
    tree = ast.parse(Path(pacs_dialog.__file__).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "desktop.main_window" not in imported
    store = Settings(settings)
    shown: list[CurrentImage | None] = [None]
    tasks: list[str] = []

    def run_task(function, on_done, on_error) -> None:  # in turn, on this thread
        tasks.append(function.__name__)
        on_done(function())

    dialog = pacs_dialog.PacsDialog(
        None, settings=store, current=lambda: shown[0], dataset=lambda: None, run_task=run_task,
        closing=threading.Event(),
    )  # fmt: skip
    qtbot.addWidget(dialog)
    assert "No image" in dialog.preview.caption.text()
    info = SyntheticImageInfo(prompt="Normal chest radiograph", seed=77)
    shown[0] = CurrentImage(np.zeros((32, 32), np.uint16), info, "seed 77", case_id=3)
    dialog.refresh_preview()
    assert "case 3 · seed 77" in dialog.preview.caption.text()
    fill(dialog, free_port())  # nothing listens there
    dialog.save_node()
    assert [n["name"] for n in store.pacs_nodes()] == ["test scp"]
    with qtbot.waitSignal(dialog.echo_done, timeout=RUN_MS) as echoed:
        dialog.echo_button.click()
    assert not echoed.args[0].ok and tasks == ["<lambda>"]
    dialog.send_button.click()  # the opener has no dataset for it (and said why): nothing is queued
    assert dialog.outbox.pending() == [] and tasks == ["<lambda>"]
