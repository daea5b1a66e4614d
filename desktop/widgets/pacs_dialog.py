"""Send to PACS: saved nodes, a C-ECHO test button, and C-STORE of the current image through an outbox.

The network work (engine.dicom.pacs) runs off the GUI thread (the ``run_task`` the opener gives: the main
window's); progress comes back as queued signals. The dialog gets what it needs from its opener explicitly
(the settings, the current image, its dataset, run_task and the closing flag), so it never imports the window.
Images go through an :class:`engine.dicom.outbox.Outbox` in the user data folder, so a failed or cancelled
send keeps them and "Send pending" tries again later. The outbox keeps one queue per node: "Send pending (N)"
counts and sends only the queue of the node the fields name, and says how many images wait for other nodes.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from desktop.exports import CurrentImage
from desktop.settings import Settings
from desktop.widgets.viewer import CasePreview, reserve_text_lines
from engine.dicom import dimse, pacs
from engine.dicom.dataset import write_dicom
from engine.dicom.outbox import Outbox

NEW_NODE = "New PACS…"

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
        dataset: Callable[[], Dataset | None],
        run_task: RunTask,
        closing: threading.Event,
    ) -> None:
        """``current``: the image "Send current image" sends (call :meth:`refresh_preview` when it changes);
        ``dataset``: that image as a DICOM dataset, or None after telling the user why; ``closing``: set when
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
        form = QFormLayout()
        form.addRow("Saved", self.node_box)
        form.addRow("Name", self.name_edit)
        form.addRow("Host", self.host_edit)
        form.addRow("Port", self.port_spin)
        form.addRow("Called AE title (the PACS)", self.called_edit)
        form.addRow("Calling AE title (CXR Studio)", self.calling_edit)

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
        layout.addWidget(close)
        self._progress.connect(self._on_progress)
        # the node's name is the Name field, else the host (node()): its queue's count follows them
        self.name_edit.textChanged.connect(self._refresh_pending)
        self.host_edit.textChanged.connect(self._refresh_pending)
        self._fill_nodes()
        self._set_busy(False)

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

    def node(self) -> pacs.PacsNode:
        """The node the fields describe; ValueError says which field is wrong."""
        return pacs.PacsNode(
            name=self.name_edit.text().strip() or self.host_edit.text().strip(),
            host=self.host_edit.text().strip(),
            port=self.port_spin.value(),
            called_ae_title=self.called_edit.text().strip(),
            calling_ae_title=self.calling_edit.text().strip(),
        )

    def _valid_node(self) -> pacs.PacsNode | None:
        try:
            return self.node()
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
        node = self._valid_node()
        if node is None or self._busy:
            return
        dataset = self._dataset()
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
        node = self._valid_node()
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

        def work() -> pacs.SendReport:
            return self.outbox.send(
                node, retries=self.retries, backoff_s=self.backoff_s, progress=self._progress.emit,
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

    # state -------------------------------------------------------------------------------------

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        for button in (self.echo_button, self.send_button, self.pending_button, self.save_button, self.delete_button):
            button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self._refresh_pending()

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
