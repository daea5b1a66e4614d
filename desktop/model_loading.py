"""The main window's model: the pack it opens at start (--model, else the last one, else the default), the
Open and Models… dialogs, the worker's loading signals, the no-model banner and the model card.

:class:`ModelLoading` is a mixin of :class:`desktop.main_window.MainWindow`: it uses the window's ``host``,
``provider``, ``settings``, ``model_info``, banner and status-bar labels, ``prompt_box``, ``generate_panel``,
run state (``_running``, ``_loading``, ``_set_running``), ``model_ready`` signal and ``show_error``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtWidgets import QFileDialog

from desktop.widgets.dialogs import TextDialog
from desktop.widgets.model_manager import ModelManager, list_packs, model_variable_problem
from desktop.worker import ModelInfo
from engine import paths

log = logging.getLogger(__name__)


class ModelLoading:
    """The window's model actions and the worker's model signals (a mixin of MainWindow)."""

    def load_initial_model(self, model: str | Path | None) -> None:
        if model is not None:
            self.load_model(model)
            return
        last = self.settings.last_model
        if last and Path(last).is_dir():
            self.load_model(last)
            return
        default = paths.default_model_dir()
        problem = model_variable_problem()
        if problem is not None:  # named as the command line names it: the user may not know it is set
            self._show_no_model(
                f"No model is installed: {problem}. "
                f"Open a model pack folder (or drop one into {paths.user_models_dir()})."
            )
            return
        if default.is_dir() or paths.model_override():  # the variable's path exists: its load error names it
            self.load_model(default)
            return
        self._show_no_model(
            f"No model is installed: the default model pack is not at {default}. "
            f"Open a model pack folder (or drop one into {paths.user_models_dir()})."
        )

    def _show_no_model(self, text: str) -> None:
        self.model_banner_label.setText(text)
        self.model_banner.show()
        self.model_label.setText("No model")
        self.provider_label.setText("")
        self._set_running(False)

    def choose_model(self) -> None:
        start = str(self.model_info.path.parent) if self.model_info else str(paths.user_models_dir())
        folder = QFileDialog.getExistingDirectory(self, "Open model pack folder", start)
        if folder:
            self.load_model(folder)

    def open_model_manager(self):
        """The model manager dialog (non-modal); "Use this model" loads the chosen pack."""
        current = self.model_info.path if self.model_info is not None else None
        dialog = ModelManager(self.load_model, current, self)
        dialog.open()
        return dialog

    def load_model(self, path: str | Path) -> None:
        if self._running:
            self.show_error("Model not changed", "A generation is running: cancel it (Esc) before opening a model.")
            return
        self._loading = True
        override = paths.model_override()
        self._load_prefix = f"{paths.MODEL_VARIABLE}={override}: " if override and Path(path) == Path(override) else ""
        self._set_running(False)
        self.host.load_model(str(path), self.provider)

    def _on_model_loading(self, path: str) -> None:
        self.model_label.setText(f"Loading model {Path(path).name}…")
        self.statusBar().showMessage(f"Loading the model pack {path} (checking its files)…")

    def _on_model_loaded(self, info: ModelInfo) -> None:
        self._loading = False
        first = self.model_info is None
        self.model_info = info
        self.model_banner.hide()
        self.model_label.setText(f"Model: {info.model_id} ({info.image_size[1]}x{info.image_size[0]})")
        self.model_label.setToolTip(info.card_text)
        self.provider_label.setText(info.device)
        self.provider_label.setToolTip(info.provider)
        self.statusBar().showMessage(f"Model {info.model_id} loaded in {info.load_s:.1f} s on {info.device}", 8000)
        self.prompt_box.set_card(info.card)
        self.prompt_box.set_other_packs(self._other_packs(info.path))
        if first and not self.settings.generation():
            self.generate_panel.apply_values(info.defaults)
        self.settings.last_model = str(info.path)
        self._set_running(False)
        self.model_ready.emit(info)

    def _other_packs(self, loaded: Path) -> dict[str, tuple[str, ...] | None]:
        """The installed packs other than ``loaded``, by model id, with the findings their cards list."""
        try:
            entries = list_packs()
        except OSError:  # an unreadable user models folder: no suggestions, nothing else lost
            log.exception("listing model packs failed")
            return {}
        here = Path(loaded).resolve()
        return {e.model_id: e.supported for e in entries if not e.error and e.path.resolve() != here}

    def _on_model_failed(self, message: str) -> None:
        message = self._load_prefix + message
        self._loading = False
        self.model_info = None
        self._show_no_model(f"The model could not be loaded. {message.splitlines()[0]}")
        self.show_error("Model not loaded", message)

    def show_model_card(self) -> None:
        if self.model_info is None:
            self.show_error("No model", "No model is loaded: open a model pack folder first.")
            return
        TextDialog(f"Model card — {self.model_info.model_id}", self.model_info.card_text, self).open()
