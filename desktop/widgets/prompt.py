"""The prompt box: multi-line text with word completion, a history/examples menu and a findings analyser.

Completion words come from the model card (``vocabulary``, ``example_prompts``, ``supported_findings``
when present) and from the prompt history. Ctrl+Enter submits; Esc asks to cancel.

The analyser shows what :func:`engine.findings.understood.understand` read (the line ``cxr-studio generate``
prints: "consolidation present (right lower lobe) · pneumothorax absent · child · AP"), warns about
findings the model card's ``supported_findings`` does not list, naming the other installed packs whose
cards list them (File > Models… switches), lists the other words the loaded model ignores with the
reason, and says when nothing at all was recognised.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from typing import Any

from PySide6.QtCore import QStringListModel, Qt, QTimer, Signal
from PySide6.QtGui import QKeyEvent, QTextCursor
from PySide6.QtWidgets import (
    QCompleter,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPlainTextEdit,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.findings.understood import Understanding, understand
from engine.findings.vocabulary import ABSENT, FINDINGS, NO_FINDING
from engine.pack import card_supported_findings

MIN_PREFIX = 2
ANALYSIS_LINES = 4  # the analyser's room: findings and the "not in this model" warning; more scrolls


def _normal(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def analyse(
    prompt: str,
    supported: Iterable[str] | None,
    others: dict[str, Iterable[str] | None] | None = None,
    card: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Findings in ``prompt`` -> {"present": [...], "absent": [...], "uncertain": [...], "unsupported": [...],
    "elsewhere": {label: [pack, ...]}, "understanding": engine.findings.understood.Understanding}.

    The reading is :func:`engine.findings.understood.understand` (the same as ``cxr-studio generate`` prints) on
    ``card`` with ``supported`` as its supported findings (None: the card lists none, so no finding is
    flagged). Names are engine.findings labels; ``unsupported`` lists present/uncertain findings the
    model lacks; ``elsewhere`` names, for each of them, the packs in ``others`` (name -> their supported
    findings) that list it.
    """
    card = {key: value for key, value in (card or {}).items() if key != "supported_findings"}
    if supported is not None:
        card["supported_findings"] = list(supported)
    understanding = understand(prompt, card)
    out: dict[str, Any] = {
        "present": [], "absent": [], "uncertain": [], "unsupported": [], "elsewhere": {},
        "understanding": understanding,
    }  # fmt: skip
    for name, status in understanding.record.findings.items():
        if name == NO_FINDING and status == ABSENT:
            continue  # "not a normal study" adds nothing next to the findings themselves
        out[status].append(FINDINGS.get(name, name))
    for name in understanding.unsupported:
        label = FINDINGS.get(name, name)
        out["unsupported"].append(label)
        packs = [
            pack
            for pack, theirs in (others or {}).items()
            if theirs is not None and {_normal(name), _normal(label)} & {_normal(s) for s in theirs}
        ]
        if packs:
            out["elsewhere"][label] = packs
    return out


class PromptEdit(QPlainTextEdit):
    """Plain-text prompt with a completion popup for the word being typed."""

    submitted = Signal()  # Ctrl+Enter
    escape_pressed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setTabChangesFocus(True)
        self._model = QStringListModel(self)
        self.completer = QCompleter(self._model, self)
        self.completer.setWidget(self)
        self.completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.completer.setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
        self.completer.setModelSorting(QCompleter.ModelSorting.CaseInsensitivelySortedModel)
        self.completer.activated.connect(self.insert_completion)

    def set_words(self, words: Iterable[str]) -> None:
        unique = sorted({w.strip() for w in words if len(w.strip()) >= MIN_PREFIX}, key=str.lower)
        self._model.setStringList(unique)

    def words(self) -> list[str]:
        return self._model.stringList()

    def _prefix(self) -> str:
        cursor = self.textCursor()
        text = self.toPlainText()[: cursor.position()]
        match = re.search(r"[\w\-']+$", text)
        return match.group(0) if match else ""

    def insert_completion(self, completion: str) -> None:
        prefix = self._prefix()
        cursor = self.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.Left, QTextCursor.MoveMode.KeepAnchor, len(prefix))
        cursor.insertText(completion)
        self.setTextCursor(cursor)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        popup = self.completer.popup()
        key = event.key()
        if popup.isVisible() and key in (
            Qt.Key.Key_Enter, Qt.Key.Key_Return, Qt.Key.Key_Escape, Qt.Key.Key_Tab, Qt.Key.Key_Backtab,
        ):  # fmt: skip
            event.ignore()  # the completer takes these
            return
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.submitted.emit()
            event.accept()
            return
        if key == Qt.Key.Key_Escape:
            self.escape_pressed.emit()
            event.accept()
            return
        super().keyPressEvent(event)
        prefix = self._prefix()
        if len(prefix) < MIN_PREFIX or not event.text():
            popup.hide()
            return
        if prefix != self.completer.completionPrefix():
            self.completer.setCompletionPrefix(prefix)
            popup.setCurrentIndex(self.completer.completionModel().index(0, 0))
        if self.completer.completionCount() == 0:
            popup.hide()
            return
        rect = self.cursorRect()
        rect.setWidth(popup.sizeHintForColumn(0) + popup.verticalScrollBar().sizeHint().width())
        self.completer.complete(rect)


class PromptBox(QWidget):
    """Prompt + history/examples menu + analyser line."""

    submitted = Signal()
    cancel_requested = Signal()
    history_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.edit = PromptEdit(self)
        self.edit.setPlaceholderText('Clinical text, e.g. "Right lower lobe consolidation, no pleural effusion"')
        self.edit.setMinimumHeight(70)
        self.edit.submitted.connect(self.submitted)
        self.edit.escape_pressed.connect(self.cancel_requested)
        self.history: list[str] = []
        self.examples: list[str] = []
        self._card_words: list[str] = []
        self.card: dict[str, Any] = {}
        self.supported_findings: tuple[str, ...] | None = None
        self.other_packs: dict[str, tuple[str, ...] | None] = {}  # installed packs not loaded -> their findings
        self.menu_button = QToolButton(self)
        self.menu_button.setText("History")
        self.menu_button.setToolTip("Recent prompts and the model card's example prompts")
        self.menu_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.menu = QMenu(self.menu_button)
        self.menu.aboutToShow.connect(self._fill_menu)
        self.menu_button.setMenu(self.menu)
        self.analysis = QLabel()
        self.analysis.setWordWrap(True)
        self.analysis.setTextFormat(Qt.TextFormat.RichText)
        self.analysis.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        # a fixed height that scrolls when the text is longer: its "Not in this model" warning, appearing as
        # the user typed, pushed the Generate button down
        self.analysis_area = QScrollArea(self)
        self.analysis_area.setWidget(self.analysis)
        self.analysis_area.setWidgetResizable(True)
        self.analysis_area.setFrameShape(QFrame.Shape.NoFrame)
        self.analysis_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.analysis_area.setFixedHeight(self.analysis.fontMetrics().lineSpacing() * ANALYSIS_LINES + 4)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(250)
        self._timer.timeout.connect(self.update_analysis)
        self.edit.textChanged.connect(self._timer.start)

        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(QLabel("Prompt"))
        top.addStretch(1)
        top.addWidget(self.menu_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.edit)
        layout.addWidget(self.analysis_area)
        self.update_analysis()

    def text(self) -> str:
        return self.edit.toPlainText()

    def set_text(self, text: str) -> None:
        self.edit.setPlainText(text)
        self.edit.moveCursor(QTextCursor.MoveOperation.End)

    # model card --------------------------------------------------------------------------------

    def set_card(self, card: dict[str, Any]) -> None:
        """Take completion words, example prompts and supported findings from a model card."""
        self.card = dict(card)
        vocabulary = card.get("vocabulary") or []
        self.examples = [str(p) for p in (card.get("example_prompts") or []) if str(p).strip()]
        self.supported_findings = card_supported_findings(card)
        words = [str(w) for w in vocabulary] if isinstance(vocabulary, list) else []
        for prompt in self.examples:
            words += re.findall(r"[A-Za-z][\w\-']+", prompt)
        if self.supported_findings:
            words += [s.replace("_", " ") for s in self.supported_findings]
        self._card_words = words
        self._refresh_words()
        self.update_analysis()

    def set_other_packs(self, packs: dict[str, tuple[str, ...] | None]) -> None:
        """The other installed packs (model id -> supported findings) that the analyser may suggest."""
        self.other_packs = dict(packs)
        self.update_analysis()

    def _refresh_words(self) -> None:
        words = list(self._card_words)
        for prompt in self.history:
            words += re.findall(r"[A-Za-z][\w\-']+", prompt)
        self.edit.set_words(words)

    # history -----------------------------------------------------------------------------------

    def set_history(self, prompts: list[str]) -> None:
        self.history = list(prompts)
        self._refresh_words()

    def remember(self, prompt: str) -> None:
        prompt = prompt.strip()
        if not prompt:
            return
        self.history = [prompt, *[p for p in self.history if p != prompt]][:50]
        self._refresh_words()
        self.history_changed.emit()

    def _fill_menu(self) -> None:
        self.menu.clear()
        if self.history:
            self.menu.addSection("Recent")
            for prompt in self.history[:20]:
                self._add_prompt_action(prompt)
        if self.examples:
            self.menu.addSection("Examples from the model card")
            for prompt in self.examples:
                self._add_prompt_action(prompt)
        if not self.history and not self.examples:
            action = self.menu.addAction("No prompts yet")
            action.setEnabled(False)

    def _add_prompt_action(self, prompt: str) -> None:
        title = prompt if len(prompt) <= 90 else prompt[:87] + "..."
        action = self.menu.addAction(title)
        action.setToolTip(prompt)
        action.triggered.connect(lambda _=False, p=prompt: self.set_text(p))

    # analyser ----------------------------------------------------------------------------------

    def analysis_result(self) -> dict[str, Any]:
        return analyse(self.text(), self.supported_findings, self.other_packs, self.card)

    def understanding(self) -> Understanding:
        """What the loaded model makes of the prompt as it stands (the generate path asks this too)."""
        return self.analysis_result()["understanding"]

    def update_analysis(self) -> None:
        result = self.analysis_result()
        understanding: Understanding = result["understanding"]
        e = html.escape
        warn = "<span style='color:#c0392b'>&#9888; {}</span>"
        if not self.text().strip():
            text = "<i>No findings recognised in the prompt.</i>"
        elif understanding.nothing_recognised:
            text = warn.format(
                "Nothing recognised in the prompt (no finding, age, sex or view): the model gets only the raw text"
            )
        else:
            text = "<b>Understood:</b> " + e(understanding.line)
        if result["unsupported"]:
            text += "<br>" + warn.format(
                "Not in this model's supported findings: "
                + ", ".join(e(x) for x in result["unsupported"])
                + " (the image may not show them)"
            )
            for label, packs in result["elsewhere"].items():
                text += (
                    f"<br><span style='color:#1f6f43'>{e(label)} is known by {e(', '.join(packs))}: "
                    "File &gt; Models… switches</span>"
                )
        others = [item for item in understanding.ignored if not item.what.startswith("finding ")]
        if others:
            text += (
                "<br><span style='color:#8a5a00'><b>Ignored by this model:</b> "
                + "; ".join(e(str(item)) for item in others)
                + "</span>"
            )
        self.analysis.setText(text)
        self.analysis.setToolTip(text)
