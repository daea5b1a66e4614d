"""``cxr-studio --selftest [--model PACK] [--provider P]``: check an installation (or a bundle) headless.

Loads the model pack (the embedded default, or ``--model``), generates one image in a few steps,
writes it as a synthetic DICOM file into a temporary folder and reads it back with pydicom (same
pixels, Secondary Capture, PatientIdentityRemoved YES), also as JPEG-LS when that codec is present,
and imports the desktop's Qt modules on the offscreen platform (no window, no display needed).

Prints one line and exits 0 when all is well; otherwise one line with the reason and exit code 1
(2 when no model is installed / the arguments are wrong). Never imports torch or ``training``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.runtime import PROVIDER_CHOICES

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
PROMPT = "Normal chest radiograph, no acute cardiopulmonary findings"


class SelftestError(RuntimeError):
    """A check failed; the message is the one-line reason."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SelftestReport:
    model_id: str
    provider: str
    image_size: tuple[int, int]  # (H, W)
    num_steps: int
    transfer_syntaxes: tuple[str, ...]
    qt_platform: str
    load_s: float
    generate_s: float
    dicom_s: float
    total_s: float

    def summary(self) -> str:
        height, width = self.image_size
        return (
            f"cxr-studio selftest: OK provider={self.provider} model={self.model_id} "
            f"image={width}x{height} steps={self.num_steps} dicom={'+'.join(self.transfer_syntaxes)} "
            f"qt={self.qt_platform} load={self.load_s:.2f}s generate={self.generate_s:.2f}s "
            f"dicom_check={self.dicom_s:.2f}s total={self.total_s:.2f}s"
        )


def _load(model: Path | None, provider: str):
    """1. the pack (verified) and its ONNX Runtime sessions."""
    from engine.pack import PackError, load_pack
    from engine.paths import MODEL_VARIABLE, default_model_dir, model_override
    from engine.pipeline import Pipeline
    from engine.runtime import BackendError

    path = model if model is not None else default_model_dir()
    # a pack chosen by $CXR_STUDIO_MODEL is named by the variable, as the command line does
    override = model_override() if model is None else None
    if override is not None and not path.exists():
        raise SelftestError(
            f"{MODEL_VARIABLE}={override}: no model pack there "
            "(unset it for the embedded default model, or pass --model PACK)",
            EXIT_USAGE,
        )
    if not path.exists():
        where = "--model" if model is not None else "no default model is installed at"
        raise SelftestError(f"{where} {path}: no such folder; pass --model PACK", EXIT_USAGE)
    named = f"{MODEL_VARIABLE}={override}" if override is not None else str(path)
    if not path.is_dir():
        raise SelftestError(f"{named}: not a folder (a model pack is a folder)", EXIT_USAGE)
    where = named if override is not None else f"model pack {path}"
    try:
        return Pipeline(load_pack(path), provider=provider)
    except (PackError, BackendError, OSError) as exc:
        raise SelftestError(f"{where}: {exc}") from None


def _generate(pipeline, num_steps: int):
    """2. one image, the model's sampler and guidance, seed 0."""
    from engine.pipeline import GenerationRequest

    defaults = pipeline.manifest.defaults
    request = GenerationRequest(
        prompt=PROMPT,
        num_steps=min(num_steps, defaults.num_steps),
        guidance_scale=defaults.guidance_scale,
        sampler=defaults.sampler,
        seed=0,
    )
    try:
        result = pipeline.generate(request)
    except Exception as exc:  # ORT raises its own types; any failure here is the reason
        raise SelftestError(f"generation failed: {type(exc).__name__}: {exc}") from None
    if not np.isfinite(result.images).all():
        raise SelftestError("generation produced non-finite pixels")
    return result


def _check_dicom(result, folder: Path) -> tuple[str, ...]:
    """3. write, read back, compare; explicit VR always, JPEG-LS too when its codec is bundled."""
    import pydicom
    from pydicom.uid import SecondaryCaptureImageStorage

    from engine.dicom.dataset import StudyContext, codec_available, datasets_from_result, write_dicom
    from engine.dicom.reading import read_pixels

    (ds,) = datasets_from_result(result, StudyContext.synthetic())
    expected = np.frombuffer(ds.PixelData, dtype=np.uint16).reshape(ds.Rows, ds.Columns)
    checked = []
    for syntax in ("explicit", "jpeg-ls"):
        if syntax != "explicit" and not codec_available(syntax):
            continue
        path = write_dicom(ds, folder / f"selftest-{syntax}.dcm", transfer_syntax=syntax)
        back = pydicom.dcmread(path)
        if back.SOPClassUID != SecondaryCaptureImageStorage:
            raise SelftestError(f"{syntax}: SOP class {back.SOPClassUID} is not Secondary Capture")
        if back.get("PatientIdentityRemoved") != "YES":
            raise SelftestError(f"{syntax}: PatientIdentityRemoved is {back.get('PatientIdentityRemoved')!r}, not YES")
        pixels = read_pixels(path)
        if pixels.shape != expected.shape or not np.array_equal(pixels, expected):
            raise SelftestError(f"{syntax}: the pixels read back differ from those written")
        checked.append(syntax)
    return tuple(checked)


def _check_qt(image: np.ndarray) -> str:
    """4. the desktop's modules import and Qt starts on the offscreen platform (no window is shown)."""
    try:
        from PySide6.QtGui import QImage
        from PySide6.QtWidgets import QApplication

        import desktop.main_window  # noqa: F401  (every GUI module imports)
    except ImportError as exc:
        raise SelftestError(f"the desktop modules do not import: {exc}") from None
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "cxr-studio", "-platform", "offscreen"])
    gray = np.ascontiguousarray((np.clip(image, 0.0, 1.0) * 65535).astype(np.uint16))
    height, width = gray.shape
    qimage = QImage(gray.data, width, height, gray.strides[0], QImage.Format.Format_Grayscale16)
    if qimage.isNull():
        raise SelftestError("Qt could not wrap the generated image")
    return app.platformName()


def run_selftest(
    model: Path | None = None, *, provider: str = "auto", num_steps: int = 4, qt: bool = True
) -> SelftestReport:
    """Run every check; raises SelftestError with the reason of the first that fails."""
    t0 = time.perf_counter()
    pipeline = _load(model, provider)
    t1 = time.perf_counter()
    result = _generate(pipeline, num_steps)
    t2 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cxr-selftest-") as folder:
        try:
            syntaxes = _check_dicom(result, Path(folder))
        except SelftestError:
            raise
        except Exception as exc:
            raise SelftestError(f"DICOM check failed: {type(exc).__name__}: {exc}") from None
    t3 = time.perf_counter()
    platform = _check_qt(result.images[0]) if qt else "skipped"
    t4 = time.perf_counter()
    return SelftestReport(
        model_id=pipeline.pack.model_id,
        provider=result.provider,
        image_size=tuple(result.images.shape[1:]),
        num_steps=result.steps_done,
        transfer_syntaxes=syntaxes,
        qt_platform=platform,
        load_s=t1 - t0,
        generate_s=t2 - t1,
        dicom_s=t3 - t2,
        total_s=t4 - t0,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cxr-studio --selftest", description=__doc__.splitlines()[0])
    parser.add_argument("--selftest", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, default=None, metavar="PACK", help="model pack folder")
    parser.add_argument("--provider", choices=PROVIDER_CHOICES, default="auto", help="ONNX Runtime device")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps (default 4)")
    parser.add_argument("--no-qt", action="store_true", help="skip the Qt check")
    parser.add_argument("-v", "--verbose", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.steps < 1:
        print("cxr-studio selftest: FAILED: --steps must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        report = run_selftest(args.model, provider=args.provider, num_steps=args.steps, qt=not args.no_qt)
    except SelftestError as exc:
        print(f"cxr-studio selftest: FAILED: {exc}", file=sys.stderr)
        return exc.code
    print(report.summary(), flush=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
