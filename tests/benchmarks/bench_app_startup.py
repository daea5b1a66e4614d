"""Desktop app start-up: launch -> interactive window -> model loaded -> first image, in fresh processes.

    .venv/bin/python tests/benchmarks/bench_app_startup.py [--model PACK] [--repeats 3] [--steps N]

Each repeat starts a new Python process that opens the main window the way ``cxr-studio`` does
(QApplication, MainWindow(--model PACK), show) and reports, relative to the moment the parent
launched it: the window answering events (first event-loop turn after show), the model pack
loaded on the worker thread (files hashed, ONNX sessions made), and the first generated image
shown (prompt set and Generate pressed as soon as the model is ready), and the app process's peak
RSS then. Without ``--model`` the embedded default pack runs, or, where there is none, a tiny
seeded pack built first (needs the training extras). User data, logs and settings go to a
temporary folder. Qt runs offscreen unless a display is set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchutil import peak_rss_mb

REPO = Path(__file__).resolve().parents[2]
PROMPT = "Right lower lobe consolidation, no pleural effusion"


def child(pack: str, steps: int, launched: float) -> int:
    """Runs in the fresh process: prints one JSON line of epoch times."""
    marks: dict[str, float] = {"launched": launched, "python_up": time.time()}
    sys.path.insert(0, str(REPO))
    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from desktop.main_window import MainWindow
    from desktop.settings import Settings

    marks["imports_done"] = time.time()
    app = QApplication([sys.argv[0]])
    settings = Settings(QSettings(os.path.join(os.environ["XDG_CONFIG_HOME"], "bench.ini"), QSettings.Format.IniFormat))
    window = MainWindow(model=pack, settings=settings)
    window.show()
    QTimer.singleShot(0, lambda: marks.setdefault("interactive", time.time()))

    def on_model(info) -> None:
        marks["model_loaded"] = time.time()
        marks["provider"] = info.provider  # type: ignore[assignment]
        window.prompt_box.set_text(PROMPT)
        window.generate_panel.steps_spin.setValue(steps)
        window.generate_panel.seed_lock.setChecked(True)
        window.generate()

    def on_image(result) -> None:
        marks["first_image"] = time.time()
        marks["generate_s"] = result.timings["total_s"]
        marks["peak_rss_mb"] = peak_rss_mb()
        window.close()
        app.quit()

    window.model_ready.connect(on_model)
    window.generation_done.connect(on_image)
    window.error_shown.connect(lambda title, text: (print(f"error: {title}: {text}", file=sys.stderr), app.quit()))
    QTimer.singleShot(600_000, app.quit)
    app.exec()
    window.deleteLater()
    print("MARKS " + json.dumps(marks))
    return 0 if "first_image" in marks else 1


def run_once(pack: Path, steps: int, scratch: Path) -> dict[str, float]:
    env = dict(os.environ)
    for name in ("XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        env[name] = str(scratch / name.lower())
        Path(env[name]).mkdir(parents=True, exist_ok=True)
    if not env.get("DISPLAY"):
        env["QT_QPA_PLATFORM"] = "offscreen"
    launched = time.time()
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(launched), "--model", str(pack), "--steps", str(steps)],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("MARKS ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"the app run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    marks = json.loads(line[len("MARKS ") :])
    marks["exited"] = time.time()
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, metavar="PACK",
                        help="default: the embedded default pack, else a tiny seeded pack")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        sys.exit(child(str(args.model), args.steps, args.child))

    with tempfile.TemporaryDirectory(prefix="cxr-bench-") as tmp:
        scratch = Path(tmp)
        pack = args.model
        embedded = REPO / "resources" / "models" / "default"
        if pack is None and (embedded / "model.json").is_file():
            pack = embedded
        if pack is None:
            sys.path.insert(0, str(REPO))
            from training.tiny import build_tiny_pack

            pack = build_tiny_pack(scratch / "tiny-pack", seed=0)
            label = "tiny seeded pack (32x32)"
        else:
            label = str(pack)
        display = os.environ.get("DISPLAY")
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs; "
              f"Qt platform: {'display ' + display if display else 'offscreen'}")  # fmt: skip
        print(f"model: {label}; {args.steps} steps; {args.repeats} fresh processes")
        runs = [run_once(Path(pack), args.steps, scratch / f"run{i}") for i in range(args.repeats)]

    def median(key: str) -> float:
        return statistics.median(run[key] - run["launched"] for run in runs)

    print(f"provider: {runs[0].get('provider')}")
    print(f"  python up             {median('python_up'):7.2f} s")
    print(f"  Qt + app imported     {median('imports_done'):7.2f} s")
    print(f"  interactive window    {median('interactive'):7.2f} s   (launch -> window shown, answering events)")
    print(f"  model loaded          {median('model_loaded'):7.2f} s   (pack verified, ONNX sessions on the worker)")
    print(f"  first image           {median('first_image'):7.2f} s   (launch -> first generated image shown)")
    print(f"  of which generation   {statistics.median(r['generate_s'] for r in runs):7.2f} s")
    rss = statistics.median(r["peak_rss_mb"] for r in runs)
    print(f"  peak RSS of the app   {rss:7.0f} MB  (VmHWM after the first image; issue 7's target <= 600 MB)")
    print("(medians of the fresh processes; times from the parent's launch of each process)")


if __name__ == "__main__":
    main()
