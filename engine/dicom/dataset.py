"""Generated radiographs as DICOM files that say, everywhere a viewer looks, that they are synthetic.

Which IOD
- Default ``iod="sc"``: **Secondary Capture Image Storage** (1.2.840.10008.5.1.4.1.1.7) with
  Conversion Type ``SYN`` ("Synthetic Image"), the standard's own term for what CXR Studio makes.
  It claims no acquisition, so nothing about a detector has to be invented. Modality ``OT``.
- Opt-in ``iod="dx"``: **Digital X-Ray Image Storage - For Presentation** (…1.1.1.1) for PACS and
  hanging-protocol tests that need modality DX. It claims a projection radiography acquisition,
  so the file carries the DX Type 1 / Type 2 attributes with honest placeholders: Type 2 detector
  facts are left empty, Imager Pixel Spacing is the nominal field of view divided by the matrix.

Either way the file is marked as synthetic: ImageType ``DERIVED\\SECONDARY``, a synthetic patient
("SYNTHETIC^CXR STUDIO", ``SYN-xxxxxxxx``), PatientIdentityRemoved ``YES`` with a
DeidentificationMethod, ImageComments and DerivationDescription naming the model, seed and prompt,
a ContributingEquipmentSequence item (109103, DCM, "Modifying Equipment") for CXR Studio, and on
request a burned-in "SYNTHETIC" label (then BurnedInAnnotation ``YES``).

Pixels: MONOCHROME2, 12 bits stored in 16 allocated (0..4095) by default, or 16 of 16. Several
labelled windows computed from the image (DEFAULT, LUNG, MEDIASTINUM, BONE, see
``engine.imaging.window_presets``) are written in stored-pixel units.

Text limits (PS3.5 6.2): the full description with both prompts goes to ImageComments (LT, 10,240
characters) and DerivationDescription (ST, 1,024 characters). The limits are applied to the UTF-8
bytes, stricter than the standard's character count, so validators that count bytes agree. Where a
limit forces it, and only there, the prompts are shortened with "..." (negative prompt first):
always in DerivationDescription for long prompts; in ImageComments only for non-ASCII prompts near
the engine's 4,000-character maximum (two ASCII prompts of 4,000 characters fit whole). Other
values (patient, study, series, model id) are checked against their VR and refused with a
ValueError, never cut. Any non-ASCII text sets SpecificCharacterSet ``ISO_IR 192`` (UTF-8).

Transfer syntaxes: Explicit VR Little Endian (default), RLE Lossless (pydicom itself), JPEG-LS
Lossless (needs ``pyjpegls``), JPEG 2000 Lossless (needs ``pylibjpeg`` + ``pylibjpeg-openjpeg``).
All are lossless; files are written atomically (temporary file, then ``os.replace``).
"""

from __future__ import annotations

import copy
import io
import os
import re
import secrets
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pydicom
from pydicom import config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_encoder
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
)
from pydicom.valuerep import validate_value

from engine import __version__
from engine.fileio import atomic_write_bytes
from engine.imaging import WindowPreset, float_to_stored, rescale_bits, window_presets

if TYPE_CHECKING:
    from engine.pipeline import GenerationResult

SOFTWARE_NAME = "CXR Studio"
SYNTHETIC_PATIENT_NAME = "SYNTHETIC^CXR STUDIO"
DEFAULT_UID_ROOT = "2.25"
IODS = {"sc": SecondaryCaptureImageStorage, "dx": DigitalXRayImageStorageForPresentation}
TRANSFER_SYNTAXES: dict[str, UID] = {
    "explicit": ExplicitVRLittleEndian,
    "rle": RLELossless,
    "jpeg-ls": JPEGLSLossless,
    "jpeg2000": JPEG2000Lossless,
}
# What to install when a codec plugin is missing, per transfer syntax.
CODEC_PACKAGES: dict[UID, str] = {
    RLELossless: "numpy",
    JPEGLSLossless: "pyjpegls",
    JPEG2000Lossless: "pylibjpeg and pylibjpeg-openjpeg",
}
LT_MAX = 10_240  # Long Text, characters
ST_MAX = 1_024  # Short Text, characters
DEFAULT_FIELD_OF_VIEW_MM = 400.0  # a 35 x 43 cm / 43 x 43 cm cassette's longer side, roughly
DEIDENTIFICATION_METHOD = "Synthetic image: no real patient (CXR Studio)"
_UID_ROOT = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


class CodecUnavailableError(RuntimeError):
    """A transfer syntax's encoder or decoder plugin is not installed; the message names the package."""


# 1. UIDs ----------------------------------------------------------------------------------------


def new_uid(root: str | None = None) -> UID:
    """A fresh UID: ``2.25.<uuid4 as integer>`` by default, or ``<root>.<uuid4 digits>`` up to 64 characters.

    A custom root (an OID your organisation owns) may be at most 40 characters, which leaves at
    least 23 random decimal digits (over 76 bits) for uniqueness.
    """
    root = DEFAULT_UID_ROOT if root is None else root.rstrip(".")
    if not _UID_ROOT.match(root) or len(root) > 40:
        raise ValueError(
            f"UID root must be dot-separated numbers without leading zeros, at most 40 characters, not {root!r}"
        )
    digits = str(uuid.uuid4().int)
    room = 64 - len(root) - 1
    if len(digits) > room:
        digits = str(int(digits[-room:]))  # int() drops any leading zero
    return UID(f"{root}.{digits}")


# 2. what made the image -------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticImageInfo:
    """The generation facts written into the file (a GenerationResult's request, per image)."""

    prompt: str
    negative_prompt: str = ""
    seed: int | None = None
    num_steps: int | None = None
    guidance_scale: float | None = None
    sampler: str = ""
    model_id: str = ""
    model_fingerprint: str = ""
    software_version: str = __version__

    @classmethod
    def from_result(cls, result: GenerationResult, index: int = 0) -> SyntheticImageInfo:
        """Facts for image ``index`` of a batch (seed = request seed + index)."""
        if not 0 <= index < len(result.seeds):
            raise ValueError(f"image index {index} is outside the batch of {len(result.seeds)}")
        request = result.request
        return cls(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            seed=result.seeds[index],
            num_steps=result.steps_done,
            guidance_scale=request.guidance_scale,
            sampler=request.sampler,
            model_id=result.model_id,
            model_fingerprint=result.model_fingerprint,
        )

    def description(self, limit: int = LT_MAX) -> str:
        """One line for ImageComments / DerivationDescription, at most ``limit`` bytes in UTF-8.

        Only the prompts are shortened (negative prompt first, then prompt, each ending "...")
        and only when the whole text would not fit.
        """

        def text(prompt: str, negative: str) -> str:
            parts = [f"synthetic image generated by {SOFTWARE_NAME} {self.software_version}"]
            if self.model_id or self.model_fingerprint:
                parts.append(f"model {_text_value(self.model_id)} {self.model_fingerprint[:16]}".rstrip())
            if self.seed is not None:
                parts.append(f"seed {self.seed}")
            if self.num_steps is not None:
                parts.append(f"steps {self.num_steps}")
            if self.guidance_scale is not None:
                parts.append(f"guidance {self.guidance_scale:g}")
            if self.sampler:
                parts.append(f"sampler {self.sampler}")
            parts.append(f'prompt "{prompt}"')
            if self.negative_prompt:
                parts.append(f'negative prompt "{negative}"')
            return ", ".join(parts) + ". Not a real patient; not for diagnosis."

        prompt, negative = _text_value(self.prompt), _text_value(self.negative_prompt)
        overflow = _size(text(prompt, negative)) - limit
        if overflow > 0 and negative:
            negative = _shorten(negative, _size(negative) - overflow)
            overflow = _size(text(prompt, negative)) - limit
        if overflow > 0:
            prompt = _shorten(prompt, _size(prompt) - overflow)
        result = text(prompt, negative)
        if _size(result) > limit:
            raise ValueError(f"the image description needs {_size(result)} bytes even without prompts (max {limit})")
        return result


# PS3.5 6.1.3 and 6.2: LT, ST and UT may hold the control characters CR, LF and FF (and ESC, but only
# to switch character sets under ISO 2022, never with UTF-8); no other string VR may hold any.
TEXT_CONTROLS = "\r\n\f"


def _is_control(char: str) -> bool:
    return unicodedata.category(char) == "Cc"  # C0 (NUL..US), DEL and C1 (U+0080..U+009F)


def _text_value(text: str) -> str:
    """Free text (a prompt) for an LT/ST value: each control character other than CR, LF and FF is
    a space (TAB, BEL, BS, ESC made dciodvfy report 'Character invalid for this VR')."""
    return "".join(" " if _is_control(c) and c not in TEXT_CONTROLS else c for c in text)


def _string_value(text: str) -> str:
    """Free text (a model id) for one LO/SH value: no control characters, and no backslash, which
    is DICOM's value separator ('a\\b' would be two values): '/' instead."""
    return "".join(" " if _is_control(c) else c for c in text).replace("\\", "/").strip()


def _size(text: str) -> int:
    """Length as the file stores it: UTF-8 bytes, which is also the character count for ASCII.

    The standard counts characters; counting bytes is stricter and satisfies validators that count bytes.
    """
    return len(text.encode("utf-8"))


def _shorten(text: str, size: int) -> str:
    """``text`` cut to at most ``size`` UTF-8 bytes including a trailing "..." (never mid-character)."""
    if _size(text) <= size:
        return text
    return text.encode("utf-8")[: max(size - 3, 0)].decode("utf-8", errors="ignore") + "..."


# 3. the study -----------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now().astimezone()


@dataclass(frozen=True)
class StudyContext:
    """Patient, study and series shared by every image of one export (a batch, a teaching case).

    Build images of one series with the same context and increasing ``instance_number``.
    Values are validated against their DICOM VRs; nothing is shortened.
    """

    patient_name: str = SYNTHETIC_PATIENT_NAME
    patient_id: str = "SYN-00000000"
    patient_birth_date: str = ""  # YYYYMMDD or empty
    patient_sex: str = ""  # M, F, O or empty
    study_instance_uid: str = field(default_factory=new_uid)
    series_instance_uid: str = field(default_factory=new_uid)
    accession_number: str = ""
    study_id: str = ""
    study_description: str = "Synthetic chest radiograph"
    series_description: str = "CXR Studio synthetic images"
    series_number: int = 1
    referring_physician_name: str = ""
    study_datetime: datetime = field(default_factory=_now)

    def __post_init__(self) -> None:
        checks = [
            ("PN", self.patient_name, "patient name"),
            ("LO", self.patient_id, "patient ID"),
            ("DA", self.patient_birth_date, "patient birth date"),
            ("UI", self.study_instance_uid, "study instance UID"),
            ("UI", self.series_instance_uid, "series instance UID"),
            ("SH", self.accession_number, "accession number"),
            ("SH", self.study_id, "study ID"),
            ("LO", self.study_description, "study description"),
            ("LO", self.series_description, "series description"),
            ("PN", self.referring_physician_name, "referring physician name"),
        ]
        for vr, value, what in checks:
            _check_value(vr, value, what)
        if not self.patient_id:
            raise ValueError("patient ID must not be empty (use StudyContext.synthetic() for a fake one)")
        if self.patient_sex not in ("", "M", "F", "O"):
            raise ValueError(f"patient sex must be M, F, O or empty, not {self.patient_sex!r}")
        if not UID(self.study_instance_uid).is_valid or not UID(self.series_instance_uid).is_valid:
            raise ValueError("study and series instance UIDs must be valid UIDs")
        if self.study_instance_uid == self.series_instance_uid:
            raise ValueError("study and series instance UIDs must differ")
        if not isinstance(self.series_number, int) or not 0 <= self.series_number < 2**31:
            raise ValueError(f"series number must be a whole number from 0 to 2**31-1, not {self.series_number!r}")

    @classmethod
    def synthetic(
        cls, rng: np.random.Generator | int | None = None, *, uid_root: str | None = None, **overrides: object
    ) -> StudyContext:
        """Clearly fake patient and study values; fresh UIDs every call (never derived from ``rng``).

        ``rng`` (a Generator or a seed) makes the patient ID, accession number and study ID
        reproducible; UIDs stay random because they must be unique.
        """
        if rng is None:
            number = secrets.randbelow(16**8)
        else:
            number = int(np.random.default_rng(rng).integers(0, 16**8))
        values: dict[str, object] = {
            "patient_id": f"SYN-{number:08X}",
            "accession_number": f"SYN{number % 10**8:08d}",
            "study_id": f"SYN{number % 10**6:06d}",
            "study_instance_uid": new_uid(uid_root),
            "series_instance_uid": new_uid(uid_root),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def next_series(self, *, uid_root: str | None = None, series_description: str | None = None) -> StudyContext:
        """The same study with a new series (fresh UID, series number + 1)."""
        return replace(
            self,
            series_instance_uid=new_uid(uid_root),
            series_number=self.series_number + 1,
            series_description=self.series_description if series_description is None else series_description,
        )


def _check_value(vr: str, value: str, what: str) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text, not {type(value).__name__}")
    if "\\" in value and vr not in ("LT", "ST", "UT"):
        raise ValueError(f"{what} must not contain a backslash (DICOM's value separator): {value!r}")
    controls = sorted({c for c in value if _is_control(c) and (vr not in ("LT", "ST", "UT") or c not in TEXT_CONTROLS)})
    if controls:
        codes = ", ".join(f"U+{ord(c):04X}" for c in controls)
        raise ValueError(f"{what} must not contain a control character ({codes}): {value!r}")
    try:
        validate_value(vr, value, config.RAISE)
    except ValueError as error:
        raise ValueError(f"{what}: {error}") from None


# 4. pixels --------------------------------------------------------------------------------------


def stored_pixels(pixels: np.ndarray, bits_stored: int) -> np.ndarray:
    """(H, W) float [0, 1] or full-range uint16 (GenerationResult.to_uint16()) -> uint16 0..2**bits_stored-1."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or min(pixels.shape) < 1:
        raise ValueError(f"one image of shape (H, W) is needed, not {pixels.shape}")
    if np.issubdtype(pixels.dtype, np.floating):
        return float_to_stored(pixels, bits_stored).astype(np.uint16)
    if pixels.dtype == np.uint16:
        return pixels.copy() if bits_stored == 16 else rescale_bits(pixels, 16, bits_stored)
    raise ValueError(f"pixels must be float in [0, 1] or full-range uint16, not {pixels.dtype}")


def burn_in_label(pixels: np.ndarray, bits_stored: int, text: str = "SYNTHETIC") -> np.ndarray:
    """Draw ``text`` into the top-left corner: white letters on a black outline, about a third of the width."""
    height, width = pixels.shape
    font = cv2.FONT_HERSHEY_SIMPLEX
    (base_width, _), _ = cv2.getTextSize(text, font, 1.0, 2)
    scale = max(0.3, 0.35 * width / base_width)
    thickness = max(1, round(scale * 2))
    (_, text_height), baseline = cv2.getTextSize(text, font, scale, thickness)
    margin = max(2, width // 40)
    origin = (margin, min(height - baseline - 1, margin + text_height))
    # OpenCV draws text into 8-bit images only: draw coverage masks, then blend into the stored pixels
    outline = np.zeros((height, width), np.uint8)
    letters = np.zeros((height, width), np.uint8)
    cv2.putText(outline, text, origin, font, scale, 255, thickness + max(2, thickness), cv2.LINE_AA)
    cv2.putText(letters, text, origin, font, scale, 255, thickness, cv2.LINE_AA)
    white = float(2**bits_stored - 1)
    blended = pixels.astype(np.float64) * (1.0 - outline / 255.0)
    blended = blended * (1.0 - letters / 255.0) + white * (letters / 255.0)
    return np.round(blended).astype(pixels.dtype)


# 5. the dataset ---------------------------------------------------------------------------------


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _ds_number(value: float) -> str:
    """A decimal string of at most 16 characters (DS)."""
    text = f"{value:.6g}" if abs(value) < 1e6 else f"{value:.1f}"
    if len(text) > 16:
        raise ValueError(f"{value!r} does not fit a DICOM decimal string")
    return text


def build_dataset(
    pixels: np.ndarray,
    info: SyntheticImageInfo,
    study: StudyContext,
    *,
    iod: str = "sc",
    bits_stored: int = 12,
    windows: Sequence[WindowPreset] | None = None,
    burn_in: bool = False,
    instance_number: int = 1,
    uid_root: str | None = None,
    field_of_view_mm: float = DEFAULT_FIELD_OF_VIEW_MM,
    created: datetime | None = None,
) -> Dataset:
    """One generated radiograph -> a DICOM dataset (not yet encoded; see :func:`write_dicom`).

    ``pixels``: (H, W) float in [0, 1] or full-range uint16. ``windows``: None computes
    DEFAULT/LUNG/MEDIASTINUM/BONE from the image (before any burn-in), in stored-pixel units; an
    empty sequence writes none (SC only). ``field_of_view_mm``: the nominal side of the imaged
    field (the longer image side), which gives the pixel spacing.

    One helper per module of the IOD (PS3.3 A.8 Secondary Capture, A.26 DX), in this order.
    """
    # 1. check the arguments; the stored pixels, their windows and the instance's UID
    _check_options(iod, bits_stored, instance_number, field_of_view_mm)
    stored = stored_pixels(pixels, bits_stored)
    windows = _checked_windows(stored, windows, iod)
    if burn_in:
        stored = burn_in_label(stored, bits_stored)
    created = _now() if created is None else created
    sop_instance_uid = new_uid(uid_root)
    if sop_instance_uid in (study.study_instance_uid, study.series_instance_uid):  # pragma: no cover - 2**-76
        raise RuntimeError("a fresh UID collided with the study's UIDs")
    spacing_mm = field_of_view_mm / max(stored.shape)

    # 2. the modules
    ds = Dataset()
    _sop_common(ds, IODS[iod], sop_instance_uid, created, info)
    _patient(ds, study)
    _general_study(ds, study)
    _general_series(ds, study, iod)
    _general_equipment(ds, info)
    _general_image(ds, info, instance_number, burn_in)
    _image_pixel(ds, stored, bits_stored)
    if iod == "sc":
        _sc_modules(ds, spacing_mm)
    else:
        _dx_modules(ds, spacing_mm)
    _voi_lut(ds, windows)

    # 3. character set last: UTF-8 only when some text needs it
    if _has_non_ascii(ds):
        ds.SpecificCharacterSet = "ISO_IR 192"
    _validate_values(ds)
    return ds


def _check_options(iod: str, bits_stored: int, instance_number: int, field_of_view_mm: float) -> None:
    if iod not in IODS:
        raise ValueError(f"iod must be one of {', '.join(IODS)}, not {iod!r}")
    if bits_stored not in (12, 16):
        raise ValueError(f"bits_stored must be 12 or 16, not {bits_stored!r}")
    if not isinstance(instance_number, int) or not 1 <= instance_number < 2**31:
        raise ValueError(f"instance number must be a whole number from 1 to 2**31-1, not {instance_number!r}")
    if not 100.0 <= field_of_view_mm <= 500.0:
        raise ValueError(f"field of view must be from 100 to 500 mm, not {field_of_view_mm!r}")


def _checked_windows(stored: np.ndarray, windows: Sequence[WindowPreset] | None, iod: str) -> list[WindowPreset]:
    """The windows to write: computed from the stored pixels when None (before any burn-in)."""
    windows = window_presets(stored) if windows is None else list(windows)
    if iod == "dx" and not windows:
        raise ValueError("a DX For Presentation image needs at least one window (VOI LUT)")
    if any(not isinstance(window, WindowPreset) for window in windows):
        raise ValueError("windows must be WindowPreset values (engine.imaging)")
    return windows


def _sop_common(
    ds: Dataset, sop_class_uid: UID, sop_instance_uid: UID, created: datetime, info: SyntheticImageInfo
) -> None:
    """SOP Common, with CXR Studio as the Modifying Equipment in ContributingEquipmentSequence."""
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate = created.strftime("%Y%m%d")
    ds.InstanceCreationTime = created.strftime("%H%M%S")
    if created.utcoffset() is not None:
        ds.TimezoneOffsetFromUTC = created.strftime("%z")
    equipment = Dataset()
    equipment.PurposeOfReferenceCodeSequence = DicomSequence([_code("109103", "DCM", "Modifying Equipment")])
    equipment.Manufacturer = SOFTWARE_NAME
    equipment.ManufacturerModelName = SOFTWARE_NAME
    equipment.SoftwareVersions = info.software_version
    equipment.ContributionDateTime = created.strftime("%Y%m%d%H%M%S%z")
    equipment.ContributionDescription = "Synthetic image generated from text by a latent diffusion model"
    ds.ContributingEquipmentSequence = DicomSequence([equipment])


def _patient(ds: Dataset, study: StudyContext) -> None:
    """Patient: synthetic by default, identity removed in any case."""
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.patient_birth_date
    ds.PatientSex = study.patient_sex
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEIDENTIFICATION_METHOD


def _general_study(ds: Dataset, study: StudyContext) -> None:
    ds.StudyInstanceUID = study.study_instance_uid
    ds.StudyDate = study.study_datetime.strftime("%Y%m%d")
    ds.StudyTime = study.study_datetime.strftime("%H%M%S")
    ds.ReferringPhysicianName = study.referring_physician_name
    ds.StudyID = study.study_id
    ds.AccessionNumber = study.accession_number
    ds.StudyDescription = study.study_description


def _general_series(ds: Dataset, study: StudyContext, iod: str) -> None:
    """General Series (after General Study: the series takes the study's date and time)."""
    ds.Modality = "DX" if iod == "dx" else "OT"
    ds.SeriesInstanceUID = study.series_instance_uid
    ds.SeriesNumber = study.series_number
    ds.SeriesDate = ds.StudyDate
    ds.SeriesTime = ds.StudyTime
    ds.SeriesDescription = study.series_description
    ds.BodyPartExamined = "CHEST"


def _general_equipment(ds: Dataset, info: SyntheticImageInfo) -> None:
    ds.Manufacturer = SOFTWARE_NAME
    ds.ManufacturerModelName = _lo(f"{SOFTWARE_NAME} {_string_value(info.model_id)}".strip())
    ds.SoftwareVersions = [_lo(f"{SOFTWARE_NAME} {info.software_version}")] + (
        [_lo(f"model {info.model_fingerprint[:16]}")] if info.model_fingerprint else []
    )


def _sc_modules(ds: Dataset, spacing_mm: float) -> None:
    """SC Equipment (Conversion Type SYN; the model and versions of General Equipment, set before) and SC
    Image (captured when the instance was created; the nominal pixel spacing)."""
    ds.ConversionType = "SYN"  # SC Equipment
    ds.SecondaryCaptureDeviceManufacturer = SOFTWARE_NAME
    ds.SecondaryCaptureDeviceManufacturerModelName = ds.ManufacturerModelName
    ds.SecondaryCaptureDeviceSoftwareVersions = ds.SoftwareVersions
    ds.DateOfSecondaryCapture = ds.InstanceCreationDate  # SC Image
    ds.TimeOfSecondaryCapture = ds.InstanceCreationTime
    ds.PixelSpacing = [_ds_number(spacing_mm)] * 2


def _general_image(ds: Dataset, info: SyntheticImageInfo, instance_number: int, burn_in: bool) -> None:
    """General Image: the synthetic marking that viewers show."""
    ds.InstanceNumber = instance_number
    ds.PatientOrientation = ["L", "F"]  # a frontal film displayed as usual: patient's left on the right
    ds.ContentDate = ds.InstanceCreationDate
    ds.ContentTime = ds.InstanceCreationTime
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.DerivationDescription = info.description(ST_MAX)
    ds.ImageComments = info.description(LT_MAX)
    ds.BurnedInAnnotation = "YES" if burn_in else "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.LossyImageCompression = "00"


def _image_pixel(ds: Dataset, stored: np.ndarray, bits_stored: int) -> None:
    """Image Pixel: MONOCHROME2, ``bits_stored`` of 16 allocated, unsigned."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()


def _dx_modules(ds: Dataset, spacing_mm: float) -> None:
    """DX Series, DX Image, DX Detector, DX Anatomy Imaged and Acquisition Context, with honest
    placeholders: the Type 2 detector facts stay empty, the spacing is the nominal field of view's."""
    ds.PresentationIntentType = "FOR PRESENTATION"  # DX Series
    ds.PixelIntensityRelationship = "LIN"  # DX Image
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.DetectorType = ""  # DX Detector
    ds.ImagerPixelSpacing = [_ds_number(spacing_mm)] * 2
    ds.ImageLaterality = "U"  # DX Anatomy Imaged
    ds.AnatomicRegionSequence = DicomSequence([_code("51185008", "SCT", "Chest")])
    ds.AcquisitionContextSequence = DicomSequence([])  # Acquisition Context


def _voi_lut(ds: Dataset, windows: Sequence[WindowPreset]) -> None:
    """VOI LUT: labelled windows in stored-pixel units (none at all when ``windows`` is empty)."""
    if windows:
        ds.WindowCenter = [_ds_number(window.window_center) for window in windows]
        ds.WindowWidth = [_ds_number(window.window_width) for window in windows]
        ds.WindowCenterWidthExplanation = [window.name for window in windows]
        ds.VOILUTFunction = "LINEAR"


def _lo(text: str) -> str:
    """LO values we compose from a model id: refuse rather than cut."""
    if len(text) > 64:
        raise ValueError(f"{text!r} is longer than the 64 characters a DICOM LO value may hold")
    return text


def _has_non_ascii(ds: Dataset) -> bool:
    for element in ds.iterall():
        values = element.value if isinstance(element.value, list | tuple) else [element.value]
        for value in values:
            if isinstance(value, str | pydicom.valuerep.PersonName) and not str(value).isascii():
                return True
    return False


def _validate_values(ds: Dataset) -> None:
    """Every text value against its VR (length, characters): a ValueError names the attribute."""
    for element in ds.iterall():
        if element.VR in ("SQ", "OB", "OW", "UN") or element.value is None:
            continue
        values = element.value if element.VM > 1 else [element.value]
        for value in values:
            if isinstance(value, pydicom.valuerep.PersonName):
                value = str(value)
            if type(value) is not str:  # numbers (IS, DS) were checked when assigned
                continue
            try:
                validate_value(element.VR, value, config.RAISE)
            except ValueError as error:
                raise ValueError(f"{element.keyword or element.tag}: {error}") from None


def datasets_from_result(result: GenerationResult, study: StudyContext, **options: object) -> list[Dataset]:
    """Every image of a batch as one series: shared study/series UIDs, InstanceNumber 1, 2, ..."""
    return [
        build_dataset(image, SyntheticImageInfo.from_result(result, index), study, instance_number=index + 1, **options)  # type: ignore[arg-type]
        for index, image in enumerate(result.images)
    ]


# 6. files ---------------------------------------------------------------------------------------


def _transfer_syntax(name: str) -> UID:
    if name not in TRANSFER_SYNTAXES:
        raise ValueError(f"transfer syntax must be one of {', '.join(TRANSFER_SYNTAXES)}, not {name!r}")
    return TRANSFER_SYNTAXES[name]


def codec_available(name: str) -> bool:
    """Whether this installation can write (encode) the named transfer syntax."""
    syntax = _transfer_syntax(name)
    return syntax == ExplicitVRLittleEndian or get_encoder(syntax).is_available


def write_dicom(ds: Dataset, path: str | os.PathLike[str], *, transfer_syntax: str = "explicit") -> Path:
    """Write ``ds`` as a DICOM file (preamble, file meta) with the named lossless transfer syntax.

    The dataset passed in is left unchanged. The file appears whole or not at all: it is written to
    a temporary file in the same folder and moved into place.
    """
    # 1. file meta, as for native pixels
    syntax = _transfer_syntax(transfer_syntax)
    ds = copy.deepcopy(ds)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"CXRSTUDIO_{__version__}"[:16]
    ds.file_meta = meta

    # 2. encode the copy in the requested transfer syntax (sets the meta's TransferSyntaxUID)
    if syntax != ExplicitVRLittleEndian:
        if not get_encoder(syntax).is_available:
            raise CodecUnavailableError(
                f"writing {syntax.name} needs the Python package {CODEC_PACKAGES[syntax]}: "
                f"pip install {CODEC_PACKAGES[syntax].replace(' and ', ' ')}"
            )
        ds.compress(syntax, generate_instance_uid=False)

    # 3. write atomically (temporary file beside it, fsync, rename)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    path = Path(path)
    atomic_write_bytes(path, buffer.getbuffer())
    return path


__all__ = [
    "CODEC_PACKAGES",
    "IODS",
    "SYNTHETIC_PATIENT_NAME",
    "TRANSFER_SYNTAXES",
    "CodecUnavailableError",
    "StudyContext",
    "SyntheticImageInfo",
    "build_dataset",
    "burn_in_label",
    "codec_available",
    "datasets_from_result",
    "new_uid",
    "stored_pixels",
    "write_dicom",
]
