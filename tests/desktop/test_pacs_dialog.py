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
        None, settings=store, current=lambda: shown[0], dataset=lambda study=None: None, run_task=run_task,
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


def bare_dialog(qtbot, settings, dataset=None, case_id: int | None = 3) -> pacs_dialog.PacsDialog:
    """The dialog with an opener of its own: tasks run in turn on this thread, a 32x32 image of case ``case_id``."""

    def run_task(function, on_done, on_error) -> None:
        try:
            result = function()
        except Exception as exc:  # as the window's Task reports it
            on_error(str(exc))
        else:
            on_done(result)

    info = SyntheticImageInfo(prompt="Normal chest radiograph", seed=77)
    current = CurrentImage(np.zeros((32, 32), np.uint16), info, "seed 77", case_id=case_id)

    def make_dataset(study=None):
        from engine.dicom.dataset import StudyContext, build_dataset

        return build_dataset(current.pixels, info, study or StudyContext.synthetic())

    dialog = pacs_dialog.PacsDialog(
        None, settings=Settings(settings), current=lambda: current, dataset=dataset or make_dataset,
        run_task=run_task, closing=threading.Event(),
    )  # fmt: skip
    qtbot.addWidget(dialog)
    return dialog


def queued(outbox: Outbox, tmp_path: Path, node: str, count: int = 1) -> list[Path]:
    from engine.dicom.dataset import StudyContext, build_dataset

    paths = []
    for i in range(count):
        ds = build_dataset(np.zeros((32, 32), np.uint16), SyntheticImageInfo(prompt="x"), StudyContext.synthetic())
        paths.append(outbox.put(write_dicom(ds, tmp_path / f"q{node}{i}.dcm"), node))
    return paths


def test_the_outbox_list_shows_node_file_and_last_error_with_retry_and_delete(
    qtbot, settings, tmp_path: Path, monkeypatch
) -> None:
    """Issue 18 item 7: the dialog showed only a count of what waits; what failed, why, and for which node was in
    attempts.json alone, and a file could not be dropped from the app."""
    from PySide6.QtWidgets import QMessageBox

    outbox = Outbox()
    dead, kept = queued(outbox, tmp_path, "dead pacs", 2)
    dialog = bare_dialog(qtbot, settings)
    dialog.retries, dialog.backoff_s = 0, 0.01
    fill(dialog, free_port())  # "test scp", where nothing listens
    dialog.name_edit.setText("dead pacs")
    dialog.save_node()
    with qtbot.waitSignal(dialog.send_done, timeout=RUN_MS):
        dialog.pending_button.click()
    table = dialog.outbox_table
    rows = {table.item(row, 1).text(): row for row in range(table.rowCount())}
    assert set(rows) == {dead.name, kept.name}
    row = rows[dead.name]
    assert table.item(row, 0).text() == "dead pacs" and table.item(row, 2).text() == "1"
    assert "127.0.0.1" in table.item(row, 3).text() or "refused" in table.item(row, 3).text().lower()
    # delete asks first: No keeps the file, Yes removes it (and only it)
    asked: list[str] = []
    answers = [QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes]
    monkeypatch.setattr(QMessageBox, "question", lambda _parent, _title, text, *a, **k: (asked.append(text),
                        answers.pop(0))[1])  # fmt: skip
    table.selectRow(rows[dead.name])
    dialog.delete_button_outbox.click()
    assert len(asked) == 1 and dead.name in asked[0] and dead.exists()
    dialog.delete_button_outbox.click()
    assert not dead.exists() and outbox.pending("dead pacs") == [kept]
    assert table.rowCount() == 1 and dead.name not in outbox.attempts()
    # retry sends that entry's node's queue (its saved settings, now at a live PACS)
    with storescp(tmp_path / "scp") as scp:
        node = PacsNode(name="dead pacs", host="127.0.0.1", port=scp.port, called_ae_title=scp.aet)
        dialog.settings.set_pacs_nodes([node.to_dict()])
        dialog.nodes = {node.name: node.to_dict()}
        dialog.name_edit.setText("somewhere else")
        table.selectRow(0)
        with qtbot.waitSignal(dialog.send_done, timeout=RUN_MS) as sent:
            dialog.retry_button.click()
        assert sent.args[0].ok and sent.args[0].sent == 1
        qtbot.waitUntil(lambda: len(scp.files()) == 1, timeout=10_000)
    assert outbox.pending() == [] and table.rowCount() == 0


def test_dicomweb_and_tls_fields_make_the_node_and_the_password_is_never_shown(qtbot, settings, tmp_path: Path) -> None:
    """The CLI's `pacs add` takes a DICOMweb URL, user and password and TLS files; the dialog had none of them."""
    from PySide6.QtWidgets import QLineEdit

    dialog = bare_dialog(qtbot, settings)
    fill(dialog, 4242)
    dialog.dicomweb_url_edit.setText("https://pacs.example/dicom-web")
    dialog.dicomweb_user_edit.setText("alice")
    dialog.dicomweb_password_edit.setText("s3cret-pw")
    dialog.tls_check.setChecked(True)
    dialog.tls_ca_edit.setText(str(tmp_path / "ca.pem"))
    assert dialog.dicomweb_password_edit.echoMode() == QLineEdit.EchoMode.Password
    node = dialog.node()
    assert (node.dicomweb_url, node.dicomweb_user, node.dicomweb_password) == (
        "https://pacs.example/dicom-web",
        "alice",
        "s3cret-pw",
    )
    assert node.tls is not None and node.tls.ca_file == str(tmp_path / "ca.pem")
    dialog.save_node()
    assert "s3cret-pw" not in dialog.status.text()
    reopened = bare_dialog(qtbot, settings)
    assert reopened.dicomweb_user_edit.text() == "alice" and reopened.tls_check.isChecked()
    assert reopened.dicomweb_password_edit.text() == "s3cret-pw"  # kept, but only ever shown as dots
    dialog.tls_cert_edit.setText(str(tmp_path / "me.pem"))  # a certificate without its key: the field is named
    dialog.save_node()
    assert "key" in dialog.status.text() and "s3cret-pw" not in dialog.status.text()
    dialog.dicomweb_url_edit.setText("")
    dialog.method_box.setCurrentIndex(dialog.method_box.findData("stow"))
    dialog.tls_cert_edit.setText("")
    dialog.send_button.click()  # STOW-RS without a URL: said, nothing queued
    assert "DICOMweb" in dialog.status.text() and dialog.outbox.pending() == []


def test_a_case_sent_again_keeps_its_patient_and_study_when_asked(qtbot, settings, tmp_path: Path) -> None:
    """Each send made a new patient ID and study UID, so a re-sent case became a second patient in the PACS."""
    with storescp(tmp_path / "scp") as scp:
        for keep in (False, True):
            for _ in range(2):
                dialog = bare_dialog(qtbot, settings)  # also across dialogs (a new session)
                fill(dialog, scp.port, scp.aet)
                dialog.keep_identity_check.setChecked(keep)
                with qtbot.waitSignal(dialog.send_done, timeout=RUN_MS):
                    dialog.send_button.click()
        qtbot.waitUntil(lambda: len(scp.files()) == 4, timeout=10_000)
        sent = [pydicom.dcmread(path) for path in scp.files()]
    studies: dict[str, list] = {}
    for ds in sent:
        studies.setdefault(ds.StudyInstanceUID, []).append(ds)
    assert sorted(len(group) for group in studies.values()) == [1, 1, 2]  # the two kept sends share one study
    pair = next(group for group in studies.values() if len(group) == 2)
    assert pair[0].PatientID == pair[1].PatientID and pair[0].SOPInstanceUID != pair[1].SOPInstanceUID
    assert len({ds.SOPInstanceUID for ds in sent}) == 4


def test_saving_a_password_for_a_plain_http_url_warns_as_the_cli_does(qtbot, settings) -> None:
    dialog = bare_dialog(qtbot, settings)
    fill(dialog, 4242)
    dialog.dicomweb_url_edit.setText("http://pacs.example/dicom-web")
    dialog.dicomweb_user_edit.setText("alice")
    dialog.dicomweb_password_edit.setText("s3cret-pw")
    dialog.save_node()
    text = dialog.status.text()
    assert "unencrypted" in text and "https" in text and "s3cret-pw" not in text
    dialog.dicomweb_url_edit.setText("https://pacs.example/dicom-web")
    dialog.save_node()
    assert "unencrypted" not in dialog.status.text()


def test_the_outbox_list_is_read_again_each_time_the_dialog_opens(qtbot, settings, tmp_path: Path) -> None:
    """The window makes the dialog once and opens it again; files queued meanwhile (a CLI send) must show."""
    dialog = bare_dialog(qtbot, settings)
    assert dialog.outbox_table.rowCount() == 0
    (path,) = queued(Outbox(), tmp_path, "later pacs")
    dialog.open()
    qtbot.waitExposed(dialog)
    assert dialog.outbox_table.rowCount() == 1 and dialog.outbox_table.item(0, 1).text() == path.name
    dialog.close()


def test_a_kept_identity_belongs_to_its_case_not_to_a_reused_case_number(qtbot, settings) -> None:
    """Identities are kept by library case id; a new library (its ids start again) must not hand case 3's patient
    to another image numbered 3."""
    from engine.dicom.dataset import build_dataset

    dialog = bare_dialog(qtbot, settings)
    dialog.keep_identity_check.setChecked(True)
    first = dialog._kept_study()
    assert dialog._kept_study().study_instance_uid == first.study_instance_uid  # the same case again
    other = CurrentImage(np.zeros((32, 32), np.uint16), SyntheticImageInfo(prompt="Left pleural effusion", seed=5),
                         "seed 5", case_id=3)  # fmt: skip
    dialog._current = lambda: other
    second = dialog._kept_study()
    assert second.patient_id != first.patient_id and second.study_instance_uid != first.study_instance_uid
    assert build_dataset(other.pixels, other.info, second).PatientID == second.patient_id
