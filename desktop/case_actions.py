"""The main window's case-library actions: open a case into the controls and the viewer, regenerate it,
compare with it, export a teaching file, and find the identical case a new result would duplicate.

:class:`CaseActions` is a mixin of :class:`desktop.main_window.MainWindow`: it uses the window's ``library``,
``generate_panel``, ``viewer``, ``steps``, ``model_info``, run state (``_running``, ``run_requests``),
``_set_current`` and ``show_error``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from desktop.exports import CurrentImage
from desktop.library import Case, LibraryError
from desktop.widgets.dialogs import TeachingFileDialog
from engine.pipeline import GenerationResult

log = logging.getLogger(__name__)


class CaseActions:
    """The window's case-library actions (a mixin of MainWindow)."""

    def open_case(self, case_id: int, *, lock_seed: bool = True) -> Case | None:
        """Show a case in the viewer and put its settings into the controls (seed locked unless not
        ``lock_seed``: Regenerate leaves the user's Lock box as it is)."""
        if self.library is None:
            return None
        try:
            case = self.library.get(case_id)
            pixels = self.library.image(case)
        except (KeyError, LibraryError) as exc:
            self.show_error("Case not opened", f"{exc}")
            return None
        self.generate_panel.load(case, lock_seed=lock_seed)
        label = f"case {case.id} · seed {case.seed}"
        self._set_current(CurrentImage(pixels, case.image_info(), label, case.id))
        self.steps.clear()
        self.viewer.set_image(pixels, label)
        self.finding_maps.set_maps(None, available=self._maps_available())  # maps are not kept with a case
        self.check_line.show_recorded(case.check_line, case.check_ok)
        if self.model_info is not None and case.model_fingerprint != self.model_info.fingerprint:
            self.statusBar().showMessage(
                f"Case {case.id} was made by model {case.model_id}; the loaded model differs, so a "
                "regeneration will not be identical",
                15_000,
            )
        return case

    def regenerate_case(self, case_id: int) -> bool:
        """Generate a case again from its record (identical pixels on the same model)."""
        if self._running:
            self.show_error("Busy", "A generation is running: wait for it or cancel it (Esc).")
            return False
        case = self.open_case(case_id, lock_seed=False)
        if case is None:
            return False
        if self.model_info is None:
            self.show_error("No model", "No model is loaded: open the model pack that made this case.")
            return False
        if case.model_fingerprint != self.model_info.fingerprint:
            self.show_error(
                "Different model",
                f"Case {case.id} was made by {case.model_id} ({case.model_fingerprint[:12]}); the loaded model is "
                f"{self.model_info.model_id} ({self.model_info.fingerprint[:12]}). The new image will differ; "
                "open the original pack for an identical one.",
            )
        self.run_requests([case.request()], source=case)
        return True

    def compare_case(self, case_id: int) -> None:
        if self.library is None:
            return
        try:
            case = self.library.get(case_id)
            pixels = self.library.image(case)
        except (KeyError, LibraryError) as exc:
            self.show_error("Case not opened", f"{exc}")
            return
        self.viewer.set_reference(pixels, f"case {case.id} · seed {case.seed}")
        self.viewer.set_compare(True)

    def choose_teaching_export(self, case_ids: list[int]) -> None:
        if not case_ids:
            return
        dialog = TeachingFileDialog(len(case_ids), self)  # New folder… where a folder chooser may not offer it
        if dialog.exec() == TeachingFileDialog.DialogCode.Accepted:
            self.export_teaching_file(case_ids, dialog.folder())

    def export_teaching_file(self, case_ids: list[int], folder: Path) -> Path | None:
        if self.library is None:
            return None
        try:
            index = self.library.export_teaching_file(case_ids, folder)
        except (OSError, ValueError, LibraryError, KeyError) as exc:
            self.show_error("Teaching file not exported", f"{exc}. Choose a writable folder with free space.")
            return None
        self.statusBar().showMessage(f"Teaching file written: {index}", 10_000)
        return index

    def _identical_case(self, result: GenerationResult, image: np.ndarray) -> Case | None:
        """A case in the library made by the same request on the same model with the same pixels, if any."""
        assert self.library is not None
        request, seed = result.request, int(result.seeds[0])
        for case in self.library.search(str(seed), limit=100_000):  # matches the seed (and prompts with it)
            if (
                case.seed == seed
                and (case.prompt, case.negative_prompt, case.sampler) == (request.prompt, request.negative_prompt,
                                                                          request.sampler)
                and case.num_steps == result.steps_done
                and case.guidance_scale == float(request.guidance_scale)
                and case.eta == float(request.eta)
                and case.model_fingerprint == result.model_fingerprint
                and (case.height, case.width) == image.shape
            ):  # fmt: skip
                try:
                    if np.array_equal(self.library.image(case), image):
                        return case
                except (LibraryError, OSError, ValueError):  # its PNG is unreadable: not a match
                    log.warning("case %s: image unreadable while looking for an identical case", case.id)
        return None
