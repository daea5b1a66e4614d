"""Screenshots of the main window after a real generation, rendered under Xvfb into resources/screenshots/.

    .venv/bin/python packaging/screenshots.py [--model PACK] [--out DIR] [--prompt TEXT] [--steps N]

Without a display it re-runs itself under ``xvfb-run`` (Debian package xvfb). The model is ``--model``,
else the default pack, else (in a development checkout with the training extras) a tiny seeded pack
built on the fly, whose images are noise. User data, logs and settings go to a temporary folder, so
the user's case library is never touched.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZE = (1440, 900)
PROMPT = "Paediatric AP chest radiograph: focal airspace consolidation consistent with bacterial pneumonia."


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, metavar="PACK")
    parser.add_argument("--out", type=Path, default=REPO / "resources" / "screenshots")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


def under_xvfb(argv: list[str]) -> int | None:
    """Re-run under xvfb-run when there is no display; None when we already have one."""
    if os.environ.get("DISPLAY") or os.environ.get("CXR_SCREENSHOTS_CHILD"):
        return None
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        print("screenshots: no display and no xvfb-run (apt-get install xvfb xauth)", file=sys.stderr)
        return 2
    env = {**os.environ, "CXR_SCREENSHOTS_CHILD": "1", "QT_QPA_PLATFORM": "xcb"}
    command = [xvfb, "-a", "-s", f"-screen 0 {SIZE[0] + 80}x{SIZE[1] + 80}x24", sys.executable, __file__, *argv]
    return subprocess.run(command, env=env, check=False).returncode


def model_folder(args: argparse.Namespace, scratch: Path) -> Path:
    from engine.paths import default_model_dir

    if args.model is not None:
        return args.model
    if default_model_dir().is_dir():
        return default_model_dir()
    sys.path.insert(0, str(REPO))
    from training.tiny import build_tiny_pack  # development checkouts only

    print("screenshots: no default model; building a tiny seeded pack (its images are noise)", file=sys.stderr)
    return build_tiny_pack(scratch / "tiny-pack", seed=0)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    code = under_xvfb(argv)
    if code is not None:
        return code
    scratch = Path(tempfile.mkdtemp(prefix="cxr-screens-"))
    for name in ("XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        os.environ[name] = str(scratch / name.lower())
    sys.path.insert(0, str(REPO))
    try:
        return shoot(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def shoot(args: argparse.Namespace, scratch: Path) -> int:
    from PySide6.QtCore import QEvent, QEventLoop, QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from desktop.main_window import MainWindow
    from desktop.settings import Settings

    pack = model_folder(args, scratch)
    app = QApplication.instance() or QApplication([sys.argv[0]])
    settings = Settings(QSettings(str(scratch / "settings.ini"), QSettings.Format.IniFormat))
    window = MainWindow(model=pack, settings=settings)
    window.resize(*SIZE)
    window.show()

    def wait_for(signal, timeout_ms: int = 600_000) -> None:
        loop = QEventLoop()
        signal.connect(loop.quit)
        QTimer.singleShot(timeout_ms, loop.quit)
        loop.exec()

    def settle() -> None:
        for _ in range(5):
            app.processEvents()

    if window.model_info is None and not window.errors:
        wait_for(window.model_ready)
    if window.model_info is None:
        print(f"screenshots: the model did not load: {window.errors}", file=sys.stderr)
        return 1
    window.prompt_box.set_text(args.prompt)
    window.generate_panel.steps_spin.setValue(args.steps)
    window.generate_panel.seed_edit.setText(str(args.seed))
    window.generate_panel.seed_lock.setChecked(True)
    window.generate()
    wait_for(window.run_finished)
    if window.errors:
        print(f"screenshots: {window.errors}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    settle()
    shots = []

    def save(name: str) -> None:
        settle()
        path = args.out / name
        shots.append(path)
        if not window.grab().save(str(path)):
            raise OSError(f"{path}: the screenshot could not be written")

    save("main-window.png")
    # the teaching viewer: the first finding's map over the image and the checker's line under it
    if len(window.finding_maps.labels()) > 1:
        window.finding_maps.pick(1)
        save("finding-map-check.png")
        window.finding_maps.pick(0)
    else:
        print("screenshots: this model has no finding maps; finding-map-check.png not written", file=sys.stderr)
    window.steps.show_frame(len(window.steps.frames()) // 3)
    window.steps._follow = False
    save("denoising-steps.png")
    window.steps.show_frame(len(window.steps.frames()) - 1)
    window.viewer.apply_preset("LUNG")
    window.viewer.clahe_box.setChecked(True)
    save("lung-window-clahe.png")
    window.viewer.clahe_box.setChecked(False)
    window.viewer.view.reset_window()
    window.viewer.pin_current()
    window.generate_panel.seed_edit.setText(str(args.seed + 1))
    window.generate()
    wait_for(window.run_finished)
    # the viewer follows the new run to its final image by itself (the stale-viewer bug, 0a7de31, is fixed);
    # say so rather than save a comparison of the wrong image
    final = window.steps.current_frame()
    if final is None or final.label != "final" or window.current is None:
        print(f"screenshots: the viewer is not on the final image: {final.label if final else None}", file=sys.stderr)
        return 1
    if not (window.viewer.view.source == window.current.pixels).all():
        print("screenshots: the viewer does not show the new final image", file=sys.stderr)
        return 1
    window.viewer.set_compare(True)
    save("compare.png")
    window.close()
    window.deleteLater()  # destroy the window while the QApplication still exists
    app.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
    app.processEvents()
    for path in shots:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
