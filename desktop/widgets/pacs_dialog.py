"""Send to PACS: saved nodes, a C-ECHO test button, and C-STORE of the current image through an outbox.

The network work (engine.dicom.pacs) runs off the GUI thread (the ``run_task`` the opener gives: the main
window's); progress comes back as queued signals. The dialog gets what it needs from its opener explicitly
(the settings, the current image, its dataset, run_task and the closing flag), so it never imports the window.
Images go through an :class:`engine.dicom.outbox.Outbox` in the user data folder, so a failed or cancelled
send keeps them and "Send pending" tries again later. The outbox keeps one queue per node: "Send pending (N)"
counts and sends only the queue of the node the fields name, and says how many images wait for other nodes.

The outbox list shows every waiting file (its node, its name, the attempts and the last error) and the files
set aside as unreadable, with Retry (send that file's node's queue, by the node's saved settings) and Delete
(asks first). The node fields are those of ``cxr-studio pacs add``: DICOMweb (STOW-RS URL, user, password:
typed into a password field, never shown, never in a message or the log) and TLS (CA file, client certificate
and key). "Keep the patient and study of a case" gives every send of one library case the same patient ID,
study and series (kept in the user data folder), with new SOP Instance UIDs, so that a PACS files a re-send
as another image of the same study rather than a new patient.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop.exports import CurrentImage
from desktop.settings import Settings
from desktop.widgets.viewer import CasePreview, reserve_text_lines
from engine import paths
from engine.dicom import dimse, pacs
from engine.dicom.dataset import StudyContext, write_dicom
from engine.dicom.outbox import Outbox
from engine.dicom.stow import check_stow_settings
from engine.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

NEW_NODE = "New PACS…"
METHODS = (("C-STORE (DIMSE)", "c-store"), ("STOW-RS (DICOMweb)", "stow"))
IDENTITIES_FILE = "pacs_identities.json"  # in the user data folder: library case id -> StudyContext
KEEP_IDENTITY_KEY = "pacs/keep_identity"

RunTask = Callable[[Callable[[], Any], Callable[[Any], None], Callable[[str], None]], object]
"""``run_task(function, on_done, on_error)``: call ``function`` off the GUI thread, then ``on_done(result)`` or
``on_error(message)`` on it (the main window's run_task, which waits for the call when the window closes)."""


class PacsDialog(QDialog):
    echo_done = Signal(object)  # engine.dicom.pacs.EchoResult
    send_done = Signal(object)  # engine.dicom.pacs.SendReport
    _progress = Signal(object)  # SendEvent, emitted from the sending thread

    def __init__(
        self,
        parent: QWidget | None,
        *,
        settings: Settings,
        current: Callable[[], CurrentImage | None],
        dataset: Callable[[StudyContext | None], Dataset | None],
        run_task: RunTask,
        closing: threading.Event,
    ) -> None:
        """``current``: the image "Send current image" sends (call :meth:`refresh_preview` when it changes);
        ``dataset(study)``: that image as a DICOM dataset with ``study``'s patient and study (None: a fresh
        synthetic one), or None after telling the user why; ``closing``: set when
        the application closes, so that a send stops early."""
        super().__init__(parent)
        self.settings = settings
        self._current = current
        self._dataset = dataset
        self._run_task = run_task
        self._closing = closing
        self.setWindowTitle("Send to PACS")
        self.setMinimumWidth(520)
        self._cancel = threading.Event()
        self._busy = False
        self.retries = 3  # transient failures (refused, dropped, timed out) are retried with back-off
        self.backoff_s = 1.0
        self.outbox = Outbox()
        self.nodes: dict[str, dict] = {n["name"]: n for n in settings.pacs_nodes() if n.get("name")}

        self.preview = CasePreview(self)  # what "Send current image" sends
        self.refresh_preview()

        self.node_box = QComboBox()
        self.node_box.currentIndexChanged.connect(self._node_chosen)
        self.name_edit = QLineEdit()
        self.host_edit = QLineEdit("127.0.0.1")
        self.port_spin = QSpinBox()
        self.port_spin.setRange(1, 65535)
        self.port_spin.setValue(104)
        self.called_edit = QLineEdit("ANY-SCP")
        self.called_edit.setMaxLength(16)
        self.calling_edit = QLineEdit("CXRSTUDIO")
        self.calling_edit.setMaxLength(16)
        self.method_box = QComboBox()
        for text, method in METHODS:
            self.method_box.addItem(text, method)
        self.dicomweb_url_edit = QLineEdit()
        self.dicomweb_url_edit.setPlaceholderText("e.g. https://pacs:8042/dicom-web (for STOW-RS)")
        self.dicomweb_user_edit = QLineEdit()
        self.dicomweb_password_edit = QLineEdit()
        self.dicomweb_password_edit.setEchoMode(QLineEdit.EchoMode.Password)  # never shown
        self.dicomweb_password_edit.setToolTip(
            "Kept with the node's settings, as `cxr-studio pacs add` keeps it; never shown or logged"
        )
        self.tls_check = QCheckBox("TLS (DICOM and https)")
        self.tls_ca_edit = QLineEdit()
        self.tls_ca_edit.setPlaceholderText("CA file (empty: the system's trusted CAs)")
        self.tls_cert_edit = QLineEdit()
        self.tls_cert_edit.setPlaceholderText("client certificate file, for mutual TLS (optional)")
        self.tls_key_edit = QLineEdit()
        self.tls_key_edit.setPlaceholderText("its key file")
        for edit in (self.tls_ca_edit, self.tls_cert_edit, self.tls_key_edit):
            edit.setEnabled(False)
            self.tls_check.toggled.connect(edit.setEnabled)
        form = QFormLayout()
        form.addRow("Saved", self.node_box)
        form.addRow("Name", self.name_edit)
        form.addRow("Host", self.host_edit)
        form.addRow("Port", self.port_spin)
        form.addRow("Called AE title (the PACS)", self.called_edit)
        form.addRow("Calling AE title (CXR Studio)", self.calling_edit)
        form.addRow("Send with", self.method_box)
        form.addRow("DICOMweb URL", self.dicomweb_url_edit)
        form.addRow("DICOMweb user", self.dicomweb_user_edit)
        form.addRow("DICOMweb password", self.dicomweb_password_edit)
        form.addRow(self.tls_check)
        form.addRow("TLS CA file", self.tls_ca_edit)
        form.addRow("TLS certificate", self.tls_cert_edit)
        form.addRow("TLS key", self.tls_key_edit)
        self.keep_identity_check = QCheckBox("Keep the patient and study of a case when it is sent again")
        self.keep_identity_check.setToolTip(
            "On: every send of one library case carries the same patient ID, study and series (new SOP Instance "
            "UIDs), so the PACS shows it as one patient. Off: each send is a new synthetic patient and study."
        )
        self.keep_identity_check.setChecked(settings.store.value(KEEP_IDENTITY_KEY, False, type=bool))
        self.keep_identity_check.toggled.connect(lambda on: settings.store.setValue(KEEP_IDENTITY_KEY, on))
        form.addRow(self.keep_identity_check)

        self.save_button = QPushButton("Save node")
        self.save_button.clicked.connect(self.save_node)
        self.delete_button = QPushButton("Delete node")
        self.delete_button.clicked.connect(self.delete_node)
        self.echo_button = QPushButton("Test connection (C-ECHO)")
        self.echo_button.clicked.connect(self.test_echo)
        self.send_button = QPushButton("Send current image")
        self.send_button.clicked.connect(self.send_current)
        self.pending_button = QPushButton("Send pending")
        self.pending_button.clicked.connect(self.send_pending)
        self.cancel_button = QPushButton("Cancel send")
        self.cancel_button.clicked.connect(self._cancel.set)
        self.progress = QProgressBar()
        self.progress.setValue(0)
        # fixed room for the longest messages (an association rejection, a resend hint), so the buttons
        # above do not move when one appears
        self.status = reserve_text_lines(QLabel("Enter the PACS's address and AE title, then test the connection."), 5)
        self.outbox_table = QTableWidget(0, 4)
        self.outbox_table.setHorizontalHeaderLabels(["Node", "File", "Attempts", "Last error"])
        self.outbox_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.outbox_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.outbox_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.outbox_table.horizontalHeader().setStretchLastSection(True)
        self.outbox_table.setMinimumHeight(110)
        self.retry_button = QPushButton("Retry")
        self.retry_button.setToolTip("Send the queue of the chosen file's node, with that node's saved settings")
        self.retry_button.clicked.connect(self.retry_selected)
        self.delete_button_outbox = QPushButton("Delete…")
        self.delete_button_outbox.setToolTip("Remove the chosen file from the outbox (asks first)")
        self.delete_button_outbox.clicked.connect(self.delete_selected)
        row1 = QHBoxLayout()
        for button in (self.save_button, self.delete_button, self.echo_button):
            row1.addWidget(button)
        row2 = QHBoxLayout()
        for button in (self.send_button, self.pending_button, self.cancel_button):
            row2.addWidget(button)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.preview)
        layout.addLayout(form)
        layout.addLayout(row1)
        layout.addLayout(row2)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(QLabel("Outbox"))
        layout.addWidget(self.outbox_table)
        row3 = QHBoxLayout()
        row3.addStretch(1)
        row3.addWidget(self.retry_button)
        row3.addWidget(self.delete_button_outbox)
        layout.addLayout(row3)
        layout.addWidget(close)
        self._progress.connect(self._on_progress)
        # the node's name is the Name field, else the host (node()): its queue's count follows them
        self.name_edit.textChanged.connect(self._refresh_pending)
        self.host_edit.textChanged.connect(self._refresh_pending)
        self._fill_nodes()
        self.outbox_table.itemSelectionChanged.connect(self._refresh_outbox_buttons)
        self._set_busy(False)

    def showEvent(self, event) -> None:
        """The window makes the dialog once: read the outbox again whenever it opens (a CLI may have sent)."""
        super().showEvent(event)
        if not self._busy:
            self._refresh_pending()
            self.refresh_outbox()

    def refresh_preview(self) -> None:
        """Show the image "Send current image" would send now."""
        current = self._current()
        if current is None:
            self.preview.set_image(None, "")
        else:
            self.preview.set_image(current.pixels, current.caption())

    # nodes -------------------------------------------------------------------------------------

    def _fill_nodes(self, select: str | None = None) -> None:
        self.node_box.blockSignals(True)
        self.node_box.clear()
        self.node_box.addItems([*sorted(self.nodes), NEW_NODE])
        index = self.node_box.findText(select) if select else 0
        self.node_box.setCurrentIndex(max(index, 0))
        self.node_box.blockSignals(False)
        self._node_chosen()

    def _node_chosen(self, *_args: object) -> None:
        data = self.nodes.get(self.node_box.currentText())
        if data is None:
            return
        self.name_edit.setText(data.get("name", ""))
        self.host_edit.setText(data.get("host", ""))
        self.port_spin.setValue(int(data.get("port", 104)))
        self.called_edit.setText(data.get("called_ae_title", ""))
        self.calling_edit.setText(data.get("calling_ae_title", "CXRSTUDIO"))
        self.dicomweb_url_edit.setText(data.get("dicomweb_url", ""))
        self.dicomweb_user_edit.setText(data.get("dicomweb_user", ""))
        self.dicomweb_password_edit.setText(data.get("dicomweb_password", ""))
        tls = data.get("tls") or {}
        self.tls_check.setChecked(bool(data.get("tls")))
        self.tls_ca_edit.setText(tls.get("ca_file", ""))
        self.tls_cert_edit.setText(tls.get("cert_file", ""))
        self.tls_key_edit.setText(tls.get("key_file", ""))

    def node(self) -> pacs.PacsNode:
        """The node the fields describe; ValueError says which field is wrong (never with the password)."""
        tls = None
        if self.tls_check.isChecked():
            tls = pacs.TlsSettings(
                ca_file=self.tls_ca_edit.text().strip(), cert_file=self.tls_cert_edit.text().strip(),
                key_file=self.tls_key_edit.text().strip(),
            )  # fmt: skip
        return pacs.PacsNode(
            name=self.name_edit.text().strip() or self.host_edit.text().strip(),
            host=self.host_edit.text().strip(),
            port=self.port_spin.value(),
            called_ae_title=self.called_edit.text().strip(),
            calling_ae_title=self.calling_edit.text().strip(),
            tls=tls,
            dicomweb_url=self.dicomweb_url_edit.text().strip(),
            dicomweb_user=self.dicomweb_user_edit.text().strip(),
            dicomweb_password=self.dicomweb_password_edit.text(),
        )

    def method(self) -> str:
        """'c-store' or 'stow', as the Send with box says."""
        return self.method_box.currentData()

    def _valid_node(self, *, sending: bool = False) -> pacs.PacsNode | None:
        """The fields' node, or None after saying what is wrong; ``sending``: also fit for the chosen method."""
        try:
            node = self.node()
            if sending and self.method() == "stow":
                check_stow_settings(node, 1)
            return node
        except ValueError as exc:
            self._say(f"{exc}. Correct it and try again.", ok=False)
            return None

    def save_node(self) -> None:
        node = self._valid_node()
        if node is None:
            return
        self.nodes[node.name] = node.to_dict()
        self.settings.set_pacs_nodes(list(self.nodes.values()))
        self._fill_nodes(node.name)
        if node.dicomweb_user and node.dicomweb_url.startswith("http:"):  # as `cxr-studio pacs add` warns
            self._say(f"Saved {node.label}. Warning: the DICOMweb password for {node.dicomweb_user} will go to "
                      f"{node.dicomweb_url} unencrypted (plain http); use an https URL outside a test setup.",
                      ok=None)  # fmt: skip
            return
        self._say(f"Saved {node.label}.", ok=True)

    def delete_node(self) -> None:
        name = self.node_box.currentText()
        if name in self.nodes:
            del self.nodes[name]
            self.settings.set_pacs_nodes(list(self.nodes.values()))
            self._fill_nodes()

    # echo --------------------------------------------------------------------------------------

    def test_echo(self) -> None:
        node = self._valid_node()
        if node is None or self._busy:
            return
        self._set_busy(True)
        self._say(f"Testing {node.label}…", ok=None)
        self._run_task(lambda: dimse.echo(node), self._on_echo, self._on_task_error)

    def _on_echo(self, result: pacs.EchoResult) -> None:
        self._set_busy(False)
        self._say(result.message, ok=result.ok)
        self.echo_done.emit(result)

    # send --------------------------------------------------------------------------------------

    def send_current(self) -> None:
        node = self._valid_node(sending=True)
        if node is None or self._busy:
            return
        study = self._kept_study()
        dataset = self._dataset(study)
        if dataset is None:
            return  # the opener said why
        try:
            with tempfile.TemporaryDirectory(prefix="cxr-send-") as folder:
                # write_dicom adds the file meta (transfer syntax) that a Part 10 file in the outbox needs
                path = write_dicom(dataset, Path(folder) / "image.dcm")
                self.outbox.put(path, node.name)
        except (OSError, ValueError) as exc:
            self._say(f"The image could not be queued in {self.outbox.folder}: {exc}", ok=False)
            return
        self._send(node)

    def send_pending(self) -> None:
        node = self._valid_node(sending=True)
        if node is None or self._busy:
            return
        if not self.outbox.pending(node.name):
            others = len(self.outbox.pending())
            elsewhere = f" ({others} image(s) in the outbox wait for other nodes)" if others else ""
            self._say(f"Nothing waits to be sent to {node.label}{elsewhere}.", ok=True)
            return
        self._send(node)

    def _send(self, node: pacs.PacsNode) -> None:
        self._cancel.clear()
        self._set_busy(True)
        count = len(self.outbox.pending(node.name))
        self.progress.setRange(0, count)
        self.progress.setValue(0)
        self._say(f"Sending {count} image(s) to {node.label}…", ok=None)
        closing = self._closing
        method = self.method()

        def work() -> pacs.SendReport:
            return self.outbox.send(
                node, method, retries=self.retries, backoff_s=self.backoff_s, progress=self._progress.emit,
                cancel=lambda: self._cancel.is_set() or closing.is_set(),
            )  # fmt: skip

        self._run_task(work, self._on_sent, self._on_task_error)

    def _on_progress(self, event: pacs.SendEvent) -> None:
        self.progress.setRange(0, max(event.total, 1))
        self.progress.setValue(event.done)
        if event.message:
            self.status.setText(event.message)

    def _on_sent(self, report: pacs.SendReport) -> None:
        self._set_busy(False)
        left, others = self._pending_counts()
        text = report.summary()
        if left:
            text += f". {left} image(s) for this node wait in the outbox: press Send pending to try again."
        if others:
            text += f". {others} image(s) in the outbox wait for other nodes (choose one to send them)."
        self._say(text, ok=report.ok)
        self.send_done.emit(report)

    def _on_task_error(self, message: str) -> None:
        self._set_busy(False)
        self._say(message, ok=False)

    # one identity per case ---------------------------------------------------------------------

    def _identities_path(self) -> Path:
        return paths.user_data_dir() / IDENTITIES_FILE

    def _read_identities(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self._identities_path().read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            log.warning("ignoring an unreadable %s", self._identities_path(), exc_info=True)
            return {}
        return data if isinstance(data, dict) else {}

    def _kept_study(self) -> StudyContext | None:
        """The patient/study/series of the current case's earlier sends when "Keep" is on (made and kept on
        its first send); None (a fresh synthetic identity) when off or for an image not in the library."""
        current = self._current()
        if not self.keep_identity_check.isChecked() or current is None or current.case_id is None:
            return None
        key = str(current.case_id)
        # case ids start again in a new library: the identity is the case's only while its image facts match
        case = {"prompt": current.info.prompt, "seed": current.info.seed, "model": current.info.model_fingerprint}
        identities = self._read_identities()
        entry = identities.get(key)
        if isinstance(entry, dict) and entry.get("case") == case:
            try:
                values = {k: v for k, v in entry.items() if k != "case"}
                return StudyContext(**dict(values, study_datetime=datetime.fromisoformat(values["study_datetime"])))
            except (KeyError, TypeError, ValueError):
                log.warning("case %s: its kept identity is unreadable; a new one is made", key, exc_info=True)
        study = StudyContext.synthetic()
        identities[key] = dict(dataclasses.asdict(study), study_datetime=study.study_datetime.isoformat(), case=case)
        try:
            atomic_write_bytes(self._identities_path(), json.dumps(identities, indent=1).encode("utf-8"))
        except OSError as exc:  # the send still goes; only the next one will not match it
            log.warning("could not keep case %s's identity: %s", key, exc)
        return study

    # the outbox list ---------------------------------------------------------------------------

    def refresh_outbox(self) -> None:
        """Fill the outbox list: waiting files (node, file, attempts, last error), then those set aside."""
        attempts = self.outbox.attempts()
        rows: list[tuple[Path, str, str, str]] = []
        for path in self.outbox.pending():
            tried = attempts.get(path.name)
            rows.append((path, self.outbox.node_of(path) or "(no node)", str(tried.attempts) if tried else "0",
                         (tried.last_error or "") if tried else "not tried yet"))  # fmt: skip
        for path in self.outbox.failed():
            node = self.outbox.node_of(path) or "(no node)"
            rows.append((path, node, "-", f"set aside, cannot be sent: {self.outbox.failure_reason(path)}"))
        table = self.outbox_table
        table.setRowCount(len(rows))
        for row, (path, node, tries, error) in enumerate(rows):
            for column, text in enumerate((node, path.name, tries, error)):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                item.setData(Qt.ItemDataRole.UserRole, str(path))
                table.setItem(row, column, item)
        self._refresh_outbox_buttons()

    def selected_file(self) -> Path | None:
        rows = self.outbox_table.selectionModel().selectedRows()
        if not rows:
            return None
        return Path(self.outbox_table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole))

    def _refresh_outbox_buttons(self, *_args: object) -> None:
        chosen = self.selected_file() is not None and not self._busy
        self.retry_button.setEnabled(chosen)
        self.delete_button_outbox.setEnabled(chosen)

    def retry_selected(self) -> None:
        """Send the chosen file's node's queue, with that node's saved settings (chosen in the fields)."""
        path = self.selected_file()
        if path is None or self._busy:
            return
        if self.outbox.is_failed(path):
            self._say(f"{path.name} was set aside as unreadable or incomplete: no retry can send it.", ok=False)
            return
        name = self.outbox.node_of(path)
        if name is None or name not in self.nodes:
            self._say(f"{path.name} waits for {name or 'no node'!r}, which is not a saved node: save a node with "
                      "that name first.", ok=False)  # fmt: skip
            return
        self._fill_nodes(name)
        self.send_pending()

    def delete_selected(self) -> None:
        """Remove the chosen file from the outbox, after asking."""
        path = self.selected_file()
        if path is None or self._busy:
            return
        answer = QMessageBox.question(
            self, "Delete from the outbox",
            f"Delete {path.name} (for {self.outbox.node_of(path) or 'no node'}) from the outbox? It will not be sent.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No,
        )  # fmt: skip
        if answer != QMessageBox.StandardButton.Yes:
            return
        try:
            self.outbox.discard(path)
        except (OSError, ValueError) as exc:
            self._say(f"Not deleted: {exc}", ok=False)
        else:
            self._say(f"Deleted {path.name} from the outbox.", ok=True)
        self.refresh_outbox()
        self._refresh_pending()

    # state -------------------------------------------------------------------------------------

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        for button in (self.echo_button, self.send_button, self.pending_button, self.save_button, self.delete_button):
            button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self._refresh_pending()
        self.refresh_outbox()

    def _pending_name(self) -> str:
        """The name node() gives the node the fields describe (its queue's name in the outbox)."""
        return self.name_edit.text().strip() or self.host_edit.text().strip()

    def _pending_counts(self) -> tuple[int, int]:
        """(images queued for the node the fields name, images queued for any other node or for none)."""
        name = self._pending_name()
        mine = len(self.outbox.pending(name)) if name else 0
        return mine, len(self.outbox.pending()) - mine

    def _refresh_pending(self, *_args: object) -> None:
        mine, others = self._pending_counts()
        self.pending_button.setText(f"Send pending ({mine})" if mine else "Send pending")
        tip = f"Send the images that earlier sends left in the outbox for {self._pending_name() or 'this node'}"
        if others:
            tip += f"; {others} other image(s) wait for other nodes (choose that node to send them)"
        self.pending_button.setToolTip(tip + ".")

    def _say(self, text: str, *, ok: bool | None) -> None:
        color = {True: "#1e7b34", False: "#c0392b", None: "#333"}[ok]
        self.status.setStyleSheet(f"color: {color}")
        self.status.setText(text)
        self.status.setToolTip(text)
