"""The main window: prompt and generation settings, the viewer, the denoising steps, the case library.

The engine runs on the worker's thread (desktop.worker); this window only queues requests and shows
what comes back, so it keeps answering while a generation runs. Batch count n runs n one-image
requests with the batch's seeds (GenerationRequest.seeds: seed, seed + 1, ..., the engine's rule),
each kept in the library as its own case that regenerates exactly.

The controls are the generate panel (desktop.widgets.generate_panel). The window's other jobs are mixins
in their own modules: the model it loads (desktop.model_loading), the case-library actions
(desktop.case_actions) and the exports (desktop.exports); short blocking calls run as desktop.tasks.Task.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFrame,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from desktop.case_actions import CaseActions
from desktop.exports import CurrentImage, Exports
from desktop.library import Case, CaseLibrary, LibraryError
from desktop.logs import log_file, setup_logging
from desktop.model_loading import ModelLoading
from desktop.settings import Settings
from desktop.shortcuts import show_shortcuts
from desktop.tasks import Task
from desktop.widgets.check_line import CheckLine
from desktop.widgets.dialogs import open_warning
from desktop.widgets.finding_maps import FindingMapsPanel
from desktop.widgets.generate_panel import GeneratePanel
from desktop.widgets.library_view import LibraryPanel
from desktop.widgets.steps import StepsPanel, decoded_step
from desktop.widgets.tag_panel import show_tags
from desktop.widgets.viewer_panel import ViewerPanel
from desktop.worker import ModelInfo, WorkerHost
from engine import imaging
from engine.dicom.dataset import SyntheticImageInfo
from engine.pipeline import GenerationRequest, GenerationResult
from engine.text import PromptError

if TYPE_CHECKING:
    from desktop.widgets.pacs_dialog import PacsDialog

log = logging.getLogger(__name__)


class MainWindow(ModelLoading, CaseActions, Exports, QMainWindow):
    model_ready = Signal(object)  # ModelInfo, after the window has taken it in
    generation_done = Signal(object)  # GenerationResult, after it is shown and kept in the library
    run_finished = Signal()  # the whole batch ended (finished, cancelled or failed)
    error_shown = Signal(str, str)
    current_changed = Signal()  # self.current (what exports and sends write) is another image

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        provider: str = "auto",
        settings: Settings | None = None,
        library: CaseLibrary | None = None,
    ) -> None:
        super().__init__()
        self.setWindowTitle("CXR Studio — synthetic chest radiographs")
        self.resize(1280, 860)
        self.settings = settings if settings is not None else Settings()
        self.provider = provider
        self.errors: list[str] = []  # every error shown, in order (also in the log file)
        self._boxes: list[QMessageBox] = []
        self._tasks: list[Task] = []
        self.closing = threading.Event()  # set when the window closes: background tasks stop early
        self.pacs_dialog: PacsDialog | None = None  # made on first use
        self.dataset_explorer = None  # made on first use (desktop.widgets.dataset_explorer)
        self.model_info: ModelInfo | None = None
        self.current: CurrentImage | None = None
        self._queue: list[GenerationRequest] = []
        self._batch_total = 0
        self._batch_done = 0
        self._running = False
        self._loading = False
        self._load_prefix = ""  # "CXR_STUDIO_MODEL=VALUE: " while loading the variable's pack (errors name it)
        self._user_window = False  # the user set W/L during this run: keep it for the next frames
        self._run_started = 0.0
        self._source_case: Case | None = None  # the case a Regenerate runs again
        self.last_batch: list[int | None] = []  # the library case of each image of the last run (None: not kept)
        self.batch_grid_dialog = None  # made on first use (desktop.widgets.batch_grid)
        self.log_path = setup_logging()

        # 1. the case library
        try:
            self.library: CaseLibrary | None = library if library is not None else CaseLibrary()
        except LibraryError as exc:
            self.library = None
            message = str(exc)
            QTimer.singleShot(0, lambda: self.show_error("Case library unavailable", message))

        # 2. the worker
        self.host = WorkerHost(self)
        self._last_check = None  # the worker's check of the image about to arrive (engine.checker.ImageCheck)
        self.host.model_loading.connect(self._on_model_loading)
        self.host.model_loaded.connect(self._on_model_loaded)
        self.host.model_failed.connect(self._on_model_failed)
        self.host.started.connect(self._on_started)
        self.host.step.connect(self._on_step)
        self.host.checked.connect(self._on_checked)
        self.host.finished.connect(self._on_finished)
        self.host.cancelled.connect(self._on_cancelled)
        self.host.failed.connect(self._on_failed)

        # 3. widgets and actions
        self._build_controls()
        self._build_central()
        self._build_library_dock()
        self._build_actions()
        self._build_status_bar()
        self._restore_settings()
        self._set_running(False)

        # 4. the model: --model, else the last one used, else the default pack
        self.load_initial_model(model)

    # ------------------------------------------------------------------------------------------- building

    def _build_controls(self) -> None:
        panel = QWidget()
        layout = QVBoxLayout(panel)
        self.model_banner = QFrame()
        self.model_banner.setFrameShape(QFrame.Shape.StyledPanel)
        self.model_banner.setStyleSheet("QFrame { background: #fff4d6; color: #333; }")
        banner_layout = QVBoxLayout(self.model_banner)
        self.model_banner_label = QLabel()
        self.model_banner_label.setWordWrap(True)
        self.open_model_button = QPushButton("Open model pack folder…")
        self.open_model_button.clicked.connect(self.choose_model)
        banner_layout.addWidget(self.model_banner_label)
        banner_layout.addWidget(self.open_model_button)
        self.model_banner.hide()
        layout.addWidget(self.model_banner)
        self.generate_panel = GeneratePanel()
        self.generate_panel.generate_requested.connect(self.generate)
        self.generate_panel.cancel_requested.connect(self.cancel)
        # the window feeds the prompt box the model card, the other packs and the history
        self.prompt_box = self.generate_panel.prompt_box
        self.prompt_box.history_changed.connect(lambda: self.settings.set_history(self.prompt_box.history))
        layout.addWidget(self.generate_panel)
        dock = QDockWidget("Generate", self)
        dock.setObjectName("generate-dock")
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable)
        dock.setWidget(panel)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)

    def _build_central(self) -> None:
        self.viewer = ViewerPanel()
        self.viewer.view.window_changed.connect(self._on_user_window)
        self.viewer.open_failed.connect(lambda message: self.show_error("Image not opened", message))
        self.viewer.image_opened.connect(lambda _path: self._set_current(None))  # exports write generated images only
        self.viewer.export_options = self.settings.export  # W/L and probe in the units the DICOM export writes
        self.viewer.custom_presets_changed.connect(
            lambda: self.settings.set_window_presets_json(self.viewer.presets_json())
        )
        self.steps = StepsPanel()
        self.steps.frame_selected.connect(self._show_frame)
        self.check_line = CheckLine()  # the finding checker's verdict on the last generated image
        viewer_box = QWidget()
        viewer_layout = QVBoxLayout(viewer_box)
        viewer_layout.setContentsMargins(0, 0, 0, 0)
        viewer_layout.setSpacing(0)
        viewer_layout.addWidget(self.viewer, 1)
        viewer_layout.addWidget(self.check_line)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(viewer_box)
        splitter.addWidget(self.steps)
        splitter.setStretchFactor(0, 5)
        splitter.setStretchFactor(1, 0)
        self.setCentralWidget(splitter)

    def _build_library_dock(self) -> None:
        self.library_panel = LibraryPanel(self.library)
        self.library_panel.open_requested.connect(self.open_case)
        self.library_panel.regenerate_requested.connect(self.regenerate_case)
        self.library_panel.compare_requested.connect(self.compare_case)
        self.library_panel.export_requested.connect(self.choose_teaching_export)
        self.library_panel.error.connect(self.show_error)
        self.library_dock = QDockWidget("Case library", self)
        self.library_dock.setObjectName("library-dock")
        self.library_dock.setWidget(self.library_panel)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.library_dock)
        # finding maps beside the viewer: picking a finding or word overlays its map (painted, pixels unchanged)
        self.finding_maps = FindingMapsPanel()
        self.finding_maps.overlay_changed.connect(self.viewer.view.set_heat_overlay)
        # an opened file is not the generation the maps and the check were made for
        self.viewer.image_opened.connect(self._forget_generation_overlays)
        self.host.model_loaded.connect(self._forget_generation_overlays)
        self.finding_maps_dock = QDockWidget("Finding maps", self)
        self.finding_maps_dock.setObjectName("finding-maps-dock")
        self.finding_maps_dock.setWidget(self.finding_maps)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.finding_maps_dock)

    def _action(self, text: str, slot, shortcut: QKeySequence | str | list | None = None, tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            if isinstance(shortcut, list):
                action.setShortcuts(shortcut)
            else:
                action.setShortcut(shortcut)
        if tip:
            action.setStatusTip(tip)
            action.setToolTip(tip)
        action.triggered.connect(lambda _checked=False: slot())
        self.addAction(action)
        return action

    def _build_actions(self) -> None:
        self.generate_action = self._action(
            "Generate", self.generate, [QKeySequence("Ctrl+Return"), QKeySequence("Ctrl+Enter")],
            "Generate (Ctrl+Enter)",
        )  # fmt: skip
        self.cancel_action = self._action("Cancel", self.cancel, QKeySequence(Qt.Key.Key_Escape), "Cancel (Esc)")
        self.open_model_action = self._action("Open model pack…", self.choose_model, QKeySequence.StandardKey.Open)
        self.models_action = self._action(
            "Models…", self.open_model_manager, "Ctrl+M",
            "The default model and the packs in the user models folder, with their model cards",
        )  # fmt: skip
        # Ctrl+M from anywhere in the application (the prompt, the dataset explorer), not only when
        # the main window itself is the active window
        self.models_action.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
        self.export_png_action = self._action("Export PNG…", self.choose_png_export, "Ctrl+E")
        self.export_dicom_action = self._action("Export DICOM…", self.choose_dicom_export, "Ctrl+Shift+E")
        self.export_steps_action = self._action("Export denoising steps…", self.choose_steps_export)
        self.send_pacs_action = self._action("Send to PACS…", self.open_pacs_dialog)
        self.dataset_action = self._action(
            "Dataset explorer…", self.open_dataset_explorer, "Ctrl+D",
            "Browse a manifest written by `cxr-studio import` and compare its images with generated ones",
        )  # fmt: skip
        self.quit_action = self._action("Quit", self.close, QKeySequence.StandardKey.Quit)
        self.card_action = self._action("Model card…", self.show_model_card)
        self.log_action = self._action("Open log folder", self.open_log_folder)
        self.about_action = self._action("About CXR Studio", self.show_about)
        self.open_image_action = self._action(
            "Open image…", self.viewer.choose_file, "Ctrl+Shift+O",
            "A PNG or DICOM file (real or synthetic) into the viewer",
        )  # fmt: skip
        self.compare_image_action = self._action(
            "Open image to compare…", lambda: self.viewer.choose_file(compare=True), "Ctrl+Alt+O",
            "A PNG or DICOM file beside the shown image, linked (window/level, zoom and pan)",
        )  # fmt: skip
        self.tags_action = self._action("DICOM tags…", lambda: show_tags(self), "Ctrl+T")
        self.shortcuts_action = self._action("Keyboard shortcuts", lambda: show_shortcuts(self), "F1")

        menu = self.menuBar().addMenu("&File")
        for action in (self.open_model_action, self.models_action, self.dataset_action, None, self.open_image_action,
                       self.compare_image_action, None, self.export_png_action, self.export_dicom_action,
                       self.export_steps_action, self.send_pacs_action, None,
                       self.quit_action):  # fmt: skip
            menu.addSeparator() if action is None else menu.addAction(action)
        run = self.menuBar().addMenu("&Generate")
        run.addAction(self.generate_action)
        run.addAction(self.cancel_action)
        run.addAction(self._action("Batch grid and comparison sheet…", self.open_batch_grid))
        view = self.menuBar().addMenu("&View")
        view.addAction(self.library_dock.toggleViewAction())
        for text, slot in (("Fit", self.viewer.fit), ("Actual size (1:1)", self.viewer.actual_size),
                           ("Reset window", self.viewer.view.reset_window),
                           ("Pin for comparison", self.viewer.pin_current)):  # fmt: skip
            view.addAction(self._action(text, slot))
        view.addAction(self.tags_action)
        help_menu = self.menuBar().addMenu("&Help")
        for action in (self.shortcuts_action, self.card_action, self.log_action, self.about_action):
            help_menu.addAction(action)

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.model_label = QLabel("No model")
        self.provider_label = QLabel("")
        self.provider_label.setToolTip("Where ONNX Runtime runs the model")
        self.progress = QProgressBar()
        self.progress.setMinimumWidth(320)
        self.progress.setTextVisible(True)
        self.progress.setFormat("Idle")
        self.progress.setValue(0)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.model_label)
        bar.addPermanentWidget(self.provider_label)

    # ------------------------------------------------------------------------------------------- settings

    def _restore_settings(self) -> None:
        self.prompt_box.set_history(self.settings.history())
        values = self.settings.generation()
        self.generate_panel.apply_values(values)
        self.viewer.load_presets_json(self.settings.window_presets_json())
        display = self.settings.viewer()
        self.viewer.clip_spin.setValue(float(display.get("clip_limit", 2.0)))
        self.viewer.tiles_spin.setValue(int(display.get("tiles", 8)))
        geometry, state = self.settings.geometry(), self.settings.state()
        if geometry is not None:
            self.restoreGeometry(geometry)
        if state is not None:
            self.restoreState(state)

    def save_settings(self) -> None:
        self.settings.set_generation(self.generate_panel.values())
        self.settings.set_history(self.prompt_box.history)
        self.settings.set_window_presets_json(self.viewer.presets_json())
        self.settings.set_viewer({"clip_limit": self.viewer.clip_spin.value(), "tiles": self.viewer.tiles_spin.value()})
        self.settings.set_geometry(self.saveGeometry(), self.saveState())
        if self.model_info is not None:
            self.settings.last_model = str(self.model_info.path)
        self.settings.sync()

    # ------------------------------------------------------------------------------------------- errors

    def show_error(self, title: str, message: str) -> None:
        """Log it and show a dialog that does not block the event loop (the run goes on)."""
        log.error("%s: %s", title, message)
        self.errors.append(f"{title}: {message}")
        details = f"Details are in the log: {self.log_path}" if self.log_path is not None else ""
        open_warning(self, self._boxes, title, message, details)
        self.statusBar().showMessage(f"{title}: {message.splitlines()[0]}", 10_000)
        self.error_shown.emit(title, message)

    # ------------------------------------------------------------------------------------------- generating

    def _set_running(self, running: bool) -> None:
        self._running = running
        ready = self.model_info is not None and not self._loading
        self.generate_panel.generate_button.setEnabled(ready and not running)
        self.generate_action.setEnabled(ready and not running)
        self.generate_panel.cancel_button.setEnabled(running)
        self.cancel_action.setEnabled(running)
        self.open_model_action.setEnabled(not running)
        self.open_model_button.setEnabled(not running)

    def is_running(self) -> bool:
        return self._running

    def generate(self) -> bool:
        """Queue the batch described by the controls; False (with a message) when it cannot start."""
        if self._running:
            return False
        if self.model_info is None or self._loading:
            self.show_error("No model", "No model is loaded: open a model pack folder first (File > Open model pack).")
            return False
        try:
            batch = self.generate_panel.request()
        except (ValueError, PromptError) as exc:
            self.show_error("Cannot generate", f"{exc}")
            return False
        if self.prompt_box.understanding().nothing_recognised and not self.confirm_unrecognised(batch.prompt):
            return False
        self.prompt_box.remember(batch.prompt)
        self.save_settings()
        # one one-image request per seed of the batch (the engine's rule), each its own library case
        self.run_requests([replace(batch, seed=seed, batch_size=1) for seed in batch.seeds()])
        return True

    def confirm_unrecognised(self, prompt: str) -> bool:
        """Ask before generating from a prompt in which nothing was recognised ("4", "asdf"): likely a slip."""
        answer = QMessageBox.question(
            self,
            "Nothing recognised",
            f"Nothing in the prompt {prompt!r} was recognised (no finding, age, sex or view): the model gets only "
            "the raw text and the image will follow no description.\n\nGenerate anyway?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Cancel,
        )
        return answer == QMessageBox.StandardButton.Yes

    def run_requests(self, requests: list[GenerationRequest], *, source: Case | None = None) -> None:
        """Run one-image requests in turn; ``source``: the library case they regenerate (its tags carry over)."""
        if not requests:
            return
        self._source_case = source
        self.last_batch = []
        self._queue = list(requests)
        self._batch_total = len(requests)
        self._batch_done = 0
        self._user_window = False
        self._run_started = time.perf_counter()
        self._set_running(True)
        self._start_next()

    def _start_next(self) -> None:
        request = self._queue.pop(0)
        self.progress.setRange(0, request.num_steps * self._batch_total)
        self.progress.setValue(request.num_steps * self._batch_done)
        self.progress.setFormat(self._progress_text(0, request.num_steps, None))
        # the steps panel's "Decode every k steps": real VAE decodes at those steps (no effect on the image)
        request = replace(request, preview_decode_every=self.steps.decode_every())
        self._decode_every = request.preview_decode_every
        self.host.generate(request)

    def cancel(self) -> None:
        if not self._running:
            return
        self._queue.clear()
        self.host.cancel()
        self.generate_panel.run_label.setText("Cancelling after the current step…")

    def _progress_text(self, done: int, total: int, left_s: float | None) -> str:
        image = f"Image {self._batch_done + 1}/{self._batch_total} · " if self._batch_total > 1 else ""
        left = "" if left_s is None else f" · {_duration(left_s)} left"
        return f"{image}Step {done}/{total}{left}"

    def _on_started(self, request: GenerationRequest) -> None:
        self.steps.clear()
        self.check_line.clear()
        self._last_check = None
        self.finding_maps.set_maps(None, available=self._maps_available())
        self._show_warning("")
        self.generate_panel.run_label.setText(
            f"Generating seed {request.seed} ({request.num_steps} steps, {request.sampler})…"
        )

    def _on_step(self, event) -> None:
        frame = imaging.to_uint16(event.preview[0])
        decoded = decoded_step(self._decode_every, event.index, event.total)
        latent_size = (int(event.latent.shape[-2]), int(event.latent.shape[-1]))
        self.steps.add_frame(f"step {event.index + 1} / {event.total}", frame, decoded=decoded, latent_size=latent_size)
        done = event.index + 1
        per_step = event.elapsed_s / done
        left = (event.total - done + event.total * len(self._queue)) * per_step
        self.progress.setValue(event.total * self._batch_done + done)
        self.progress.setFormat(self._progress_text(done, event.total, left))

    def _show_frame(self, index: int) -> None:
        frame = self.steps.frames()[index]
        label = self.current.label if frame.label == "final" and self.current is not None else frame.label
        self.viewer.set_image(frame.pixels, label, keep_window=self._user_window)

    def _on_user_window(self, _center: float, _width: float) -> None:
        self._user_window = True

    def _forget_generation_overlays(self, *_args) -> None:
        self.finding_maps.set_maps(None, available=self._maps_available())
        self.check_line.clear()

    def _maps_available(self) -> bool:
        return self.model_info is not None and self.model_info.has_attention

    def _on_checked(self, checks) -> None:
        """The worker's check of the image about to arrive in _on_finished (None: the pack has no checker)."""
        self.check_line.show_checks(checks)
        self._last_check = checks[0] if checks else None  # recorded with the case in _on_finished

    def _on_finished(self, result: GenerationResult) -> None:
        image = result.to_uint16()[0]
        info = SyntheticImageInfo.from_result(result, 0)
        case_id = None
        identical: Case | None = None
        if self.library is not None:
            try:
                identical = self._identical_case(result, image)
                if identical is not None:  # the same request on the same model again: no duplicate row
                    case_id = identical.id
                else:
                    case_id = self.library.add(result, 0, image=image, check=self._last_check).id
                    source = self._source_case
                    if source is not None and source.tags:  # a regenerated case keeps its tags
                        self.library.set_tags(case_id, source.tags)
            except (LibraryError, ValueError) as exc:
                self.show_error("Not kept in the case library", str(exc))
            except Exception as exc:  # sqlite3 and OS errors beyond LibraryError
                log.exception("library add failed")
                self.show_error("Not kept in the case library", f"The library could not be written: {exc}")
        self.last_batch.append(case_id)
        label = f"seed {result.seeds[0]} · {result.request.sampler} · {result.steps_done} steps"
        self._set_current(CurrentImage(image, info, label, case_id))
        self.steps.add_frame("final", image)
        if self.steps.following():
            self.viewer.set_image(image, label, keep_window=self._user_window)
        self.finding_maps.set_maps(result.attention, available=self._maps_available())
        self._batch_done += 1
        self.library_panel.refresh()
        if case_id is not None:
            self.library_panel.select(case_id)
        t = result.timings
        same = f", identical to case {identical.id} (not added again)" if identical is not None else ""
        self.generate_panel.run_label.setText(
            f"Seed {result.seeds[0]}{same}: {t.get('total_s', 0):.2f} s on "
            f"{result.provider.replace('ExecutionProvider', '')}"
        )
        if result.dropped_words:  # a warning, not an error: the image was made from the rest
            warning = (
                f"The text encoder's token limit cut off the end of the prompt: "
                f"{' '.join(result.dropped_words)!r} was ignored. Shorten the prompt to use it."
            )
            log.warning(warning)
            self._show_warning(warning)
        self.generation_done.emit(result)
        if self._queue:
            self._start_next()
        elif identical is not None and self._batch_total == 1:
            self._end_run(f"Done: identical to case {identical.id}, which the library already holds")
        else:
            self._end_run(f"Done: {self._batch_done} image(s) in {time.perf_counter() - self._run_started:.1f} s")

    def _show_warning(self, text: str) -> None:
        """The warning line under the run line ("" clears it; its room stays)."""
        self.generate_panel.warning_label.setText(text)
        self.generate_panel.warning_label.setToolTip(text)

    def _set_current(self, current: CurrentImage) -> None:
        self.current = current
        self.current_changed.emit()

    def _on_cancelled(self, result: GenerationResult) -> None:
        self._queue.clear()
        image = result.to_uint16()[0]
        label = f"cancelled at step {result.steps_done}"
        # the partial image is what the viewer shows now, so it is what an export or a send writes
        self._set_current(CurrentImage(image, SyntheticImageInfo.from_result(result, 0), label))
        self.viewer.set_image(image, label, keep_window=self._user_window)
        self._end_run(
            f"Cancelled after {result.steps_done} of {result.request.num_steps} steps (not kept in the library)"
        )

    def _on_failed(self, message: str) -> None:
        self._queue.clear()
        self._end_run("Generation failed")
        self.show_error("Generation failed", message)

    def _end_run(self, text: str) -> None:
        self._set_running(False)
        self.progress.setFormat(text if len(text) < 60 else "Idle")
        self.generate_panel.run_label.setText(text)
        self.statusBar().showMessage(text, 10_000)
        self.run_finished.emit()

    # ------------------------------------------------------------------------------------------- dataset explorer

    def open_dataset_explorer(self, manifest: str | Path | None = None):
        """Show the dataset explorer: ``manifest`` if given, else what it shows, else the last manifest, else ask."""
        from desktop.widgets.dataset_explorer import DatasetExplorer

        if self.dataset_explorer is None:
            explorer = DatasetExplorer(self.settings, self)
            explorer.set_host(
                lambda: (self.current.pixels, self.current.label) if self.current is not None else None,
                self._generate_from_text,
            )
            self.generation_done.connect(lambda _r: explorer.generated(self.current.pixels, self.current.label))
            self.run_finished.connect(explorer.generation_ended)
            self.dataset_explorer = explorer
        explorer = self.dataset_explorer
        explorer.show()
        explorer.raise_()
        explorer.activateWindow()
        if manifest is not None:
            explorer.open_manifest(manifest)
        elif explorer.loaded is None and not explorer.open_last():
            explorer.choose_manifest()
        return explorer

    def _generate_from_text(self, text: str) -> bool:
        """The dataset explorer's "Generate from this text": ONE image from that text with the controls'
        other settings (seed as the Lock box says). The prompt box and the batch count are left alone:
        the user's prompt may be an unsaved edit, and the explorer compares one image with one record."""
        if self._running:
            self.show_error("Busy", "A generation is running: wait for it or cancel it (Esc).")
            return False
        if self.model_info is None or self._loading:
            self.show_error("No model", "No model is loaded: open a model pack folder first (File > Open model pack).")
            return False
        try:
            request = self.generate_panel.request(prompt=text, count=1)
        except (ValueError, PromptError) as exc:
            self.show_error("Cannot generate", f"{exc}")
            return False
        self.run_requests([request])
        return True

    # ------------------------------------------------------------------------------------------- PACS

    def open_pacs_dialog(self) -> None:
        """The Send to PACS dialog (made on first use), given the window's settings, image and tasks."""
        # imported here, not at the top: pynetdicom adds about half a second to the application's start
        from desktop.widgets.pacs_dialog import PacsDialog

        if self.pacs_dialog is None:
            self.pacs_dialog = PacsDialog(
                self, settings=self.settings, current=lambda: self.current, dataset=self.current_dataset,
                run_task=self.run_task, closing=self.closing,
            )  # fmt: skip
            self.current_changed.connect(self.pacs_dialog.refresh_preview)
        self.pacs_dialog.open()

    def open_batch_grid(self) -> None:
        """The last batch as thumbnails and the prompt x seed / guidance sheet (made on first use)."""
        from desktop.widgets.batch_grid import BatchGridDialog

        if self.batch_grid_dialog is None:
            self.batch_grid_dialog = BatchGridDialog(
                self, template=self.generate_panel.request, run_requests=self.run_requests,
                is_running=self.is_running, library=lambda: self.library, last_batch=lambda: self.last_batch,
                open_case=self.open_case,
            )  # fmt: skip
            self.run_finished.connect(self.batch_grid_dialog.on_run_finished)
        self.batch_grid_dialog.show_last_batch()
        self.batch_grid_dialog.show()
        self.batch_grid_dialog.raise_()

    def run_task(self, function, on_done, on_error=None) -> Task:
        """Run a blocking call off the GUI thread; the window waits for it when closing."""
        task = Task(function, self)
        task.done.connect(on_done)
        task.errored.connect(on_error or (lambda message: self.show_error("Failed", message)))
        task.finished.connect(lambda t=task: self._tasks.remove(t) if t in self._tasks else None)
        self._tasks.append(task)
        task.start()
        return task

    # ------------------------------------------------------------------------------------------- misc

    def open_log_folder(self) -> None:
        folder = log_file().parent
        folder.mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    def about_text(self) -> str:
        """The About box: version, purpose, and the loaded model's training data and its licence
        (the default model's data is CC BY 4.0: its authors are credited wherever it is shown)."""
        from engine import __version__

        lines = [
            f"CXR Studio {__version__}",
            "",
            "Synthetic chest radiographs from clinical text with a latent diffusion model, offline.",
            "For education and testing only; not for diagnosis.",
        ]
        info = self.model_info
        if info is not None:
            lines += ["", f"Model: {info.model_id}"]
            for key, title in (("training_data", "Trained on"), ("licence_of_training_data", "Licence")):
                if info.card.get(key):
                    lines.append(f"{title}: {info.card[key]}")
        lines += ["", "Text encoder: all-MiniLM-L6-v2 (Apache-2.0) or the model's own, as its card says."]
        return "\n".join(lines)

    def show_about(self) -> None:
        QMessageBox.about(self, "About CXR Studio", self.about_text())

    def closeEvent(self, event: QCloseEvent) -> None:
        """Stop a run cleanly: cancel, quit the worker's thread and wait for it; nothing is left running."""
        self._queue.clear()
        self.closing.set()
        try:
            self.save_settings()
        except Exception:  # never block closing on settings
            log.exception("settings not saved")
        self.steps.set_playing(False)
        if self.dataset_explorer is not None:
            self.dataset_explorer.close()
        self.host.shutdown()
        for task in list(self._tasks):
            task.wait(15_000)
        for box in list(self._boxes):
            box.close()
        if self.library is not None:
            self.library.close()
        super().closeEvent(event)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"
