"""The generate panel: the prompt, negative prompt, seed (lock / new), steps, guidance, sampler and batch
count, the Generate and Cancel buttons, and the run and warning lines under them.

The panel only describes a request; the main window runs it (desktop.main_window).
"""

from __future__ import annotations

import secrets

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from desktop.library import Case
from desktop.widgets.prompt import PromptBox
from desktop.widgets.viewer import reserve_text_lines
from engine.pipeline import MAX_BATCH, MAX_GUIDANCE, MAX_SEED, MAX_STEPS, GenerationRequest
from engine.samplers import SAMPLERS

RANDOM_SEED_LIMIT = 2**32  # random seeds stay short enough to read aloud


class GeneratePanel(QWidget):
    """The controls that describe what to generate (the Generate dock's content)."""

    generate_requested = Signal()  # Generate clicked or Ctrl+Enter in the prompt
    cancel_requested = Signal()  # Cancel clicked or Esc in the prompt

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)  # the dock's own layout keeps the margins
        self.prompt_box = PromptBox()
        self.prompt_box.submitted.connect(self.generate_requested.emit)
        self.prompt_box.cancel_requested.connect(self.cancel_requested.emit)
        layout.addWidget(self.prompt_box)
        self.negative_edit = QLineEdit()
        self.negative_edit.setPlaceholderText("Negative prompt (what to steer away from), optional")
        layout.addWidget(QLabel("Negative prompt"))
        layout.addWidget(self.negative_edit)

        form = QFormLayout()
        seed_row = QHBoxLayout()
        self.seed_edit = QLineEdit("")
        self.seed_edit.setPlaceholderText("random")  # unlocked: drawn at Generate (then shown), never a "0"
        self.seed_edit.setToolTip(f"Seed, 0 to {MAX_SEED}; image i of a batch uses seed + i")
        self.seed_lock = QCheckBox("Lock")
        self.seed_lock.setToolTip("Locked: keep this seed. Unlocked: a new random seed for every Generate")
        self.seed_lock.toggled.connect(self._lock_toggled)
        self.seed_dice = QPushButton("New")
        self.seed_dice.setToolTip("Draw a new random seed now")
        self.seed_dice.clicked.connect(lambda: self.seed_edit.setText(str(secrets.randbelow(RANDOM_SEED_LIMIT))))
        seed_row.addWidget(self.seed_edit, 1)
        seed_row.addWidget(self.seed_lock)
        seed_row.addWidget(self.seed_dice)
        form.addRow("Seed", seed_row)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, MAX_STEPS)
        self.steps_spin.setValue(20)
        form.addRow("Steps", self.steps_spin)
        self.guidance_spin = QDoubleSpinBox()
        self.guidance_spin.setRange(0.0, MAX_GUIDANCE)
        self.guidance_spin.setSingleStep(0.5)
        self.guidance_spin.setDecimals(2)
        self.guidance_spin.setValue(4.0)
        self.guidance_spin.setToolTip("Classifier-free guidance scale (1 = no guidance)")
        form.addRow("Guidance", self.guidance_spin)
        self.sampler_box = QComboBox()
        for name in SAMPLERS:
            self.sampler_box.addItem(name, name)
        form.addRow("Sampler", self.sampler_box)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, MAX_BATCH)
        self.batch_spin.setToolTip("Number of images, one after another (seeds seed, seed+1, ...)")
        form.addRow("Batch count", self.batch_spin)
        layout.addLayout(form)

        buttons = QHBoxLayout()
        self.generate_button = QPushButton("Generate")
        self.generate_button.setToolTip("Generate (Ctrl+Enter)")
        self.generate_button.setDefault(True)
        self.generate_button.clicked.connect(lambda: self.generate_requested.emit())
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the current step (Esc)")
        self.cancel_button.clicked.connect(lambda: self.cancel_requested.emit())
        buttons.addWidget(self.generate_button, 2)
        buttons.addWidget(self.cancel_button, 1)
        layout.addLayout(buttons)
        # the run and warning lines keep their room whether or not they say anything: a warning that
        # appeared pushed the Generate buttons up when the panel had no spare height
        self.run_label = reserve_text_lines(QLabel(), 2)
        layout.addWidget(self.run_label)
        self.warning_label = reserve_text_lines(QLabel(), 4)
        self.warning_label.setStyleSheet("color: #b35900")
        layout.addWidget(self.warning_label)
        layout.addStretch(1)
        disclaimer = QLabel("Synthetic images for education and testing. Not for diagnosis.")
        disclaimer.setWordWrap(True)
        disclaimer.setStyleSheet("color: #a33")
        layout.addWidget(disclaimer)

    # the settings ------------------------------------------------------------------------------

    def values(self) -> dict:
        """The controls as the settings keep them (the prompt is kept as history, not here)."""
        return {
            "sampler": self.sampler_box.currentData(),
            "num_steps": self.steps_spin.value(),
            "guidance_scale": self.guidance_spin.value(),
            "negative_prompt": self.negative_edit.text(),
            "seed": self.seed_edit.text(),
            "seed_locked": self.seed_lock.isChecked(),
            "batch_count": self.batch_spin.value(),
        }

    def apply_values(self, values: dict) -> None:
        """Set the controls that ``values`` (what :meth:`values` gave, or a model card's defaults) names."""
        if "sampler" in values and values["sampler"] in SAMPLERS:
            self.sampler_box.setCurrentIndex(self.sampler_box.findData(values["sampler"]))
        if "num_steps" in values:
            self.steps_spin.setValue(int(values["num_steps"]))
        if "guidance_scale" in values:
            self.guidance_spin.setValue(float(values["guidance_scale"]))
        if "negative_prompt" in values:
            self.negative_edit.setText(str(values["negative_prompt"]))
        if "seed" in values:
            self.seed_edit.setText(str(values["seed"]))
        if "seed_locked" in values:
            self.seed_lock.setChecked(bool(values["seed_locked"]))
        if "batch_count" in values:
            self.batch_spin.setValue(int(values["batch_count"]))

    # what to generate --------------------------------------------------------------------------

    def load(self, case: Case, *, lock_seed: bool = True) -> None:
        """Fill the controls from a library case: its prompt, settings and seed, batch count 1, so that
        :meth:`request` is the case's own request. The seed is locked unless not ``lock_seed`` (Regenerate
        leaves the user's Lock box as it is)."""
        self.prompt_box.set_text(case.prompt)
        self.negative_edit.setText(case.negative_prompt)
        self.seed_edit.setText(str(case.seed))
        if lock_seed:
            self.seed_lock.setChecked(True)
        self.steps_spin.setValue(case.num_steps)
        self.guidance_spin.setValue(case.guidance_scale)
        self.sampler_box.setCurrentIndex(self.sampler_box.findData(case.sampler))
        self.batch_spin.setValue(1)

    def _lock_toggled(self, locked: bool) -> None:
        if locked and not self.seed_edit.text().strip():  # a lock locks a seed one can see and write down
            self.seed_edit.setText(str(secrets.randbelow(RANDOM_SEED_LIMIT)))

    def _seed(self) -> int:
        if not self.seed_lock.isChecked():
            self.seed_edit.setText(str(secrets.randbelow(RANDOM_SEED_LIMIT)))
        text = self.seed_edit.text().strip()
        if not text.isdigit() or int(text) > MAX_SEED:
            raise ValueError(f"the seed must be a whole number from 0 to {MAX_SEED}, not {text!r}")
        return int(text)

    def request(self, *, prompt: str | None = None, count: int | None = None) -> GenerationRequest:
        """What the controls describe: one request for the whole batch, its ``batch_size`` the batch count
        (``count`` instead when given), its prompt the prompt box's (``prompt`` instead when given).
        Its :meth:`~engine.pipeline.GenerationRequest.seeds` are the seeds of the batch's images.

        An unlocked seed is drawn anew first. Validated: raises ValueError (PromptError for the prompt)
        saying what to correct, also when the batch's last seed would pass the largest one.
        """
        request = GenerationRequest(
            prompt=self.prompt_box.text() if prompt is None else prompt,
            negative_prompt=self.negative_edit.text(),
            num_steps=self.steps_spin.value(),
            guidance_scale=round(self.guidance_spin.value(), 4),
            sampler=self.sampler_box.currentData(),
            seed=self._seed(),
            batch_size=self.batch_spin.value() if count is None else count,
        ).validated()
        if request.seeds()[-1] > MAX_SEED:
            raise ValueError(f"seed + batch count must stay at most {MAX_SEED}")
        return request
