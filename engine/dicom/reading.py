"""DICOM files read back to pixels: as stored (:func:`read_pixels`) or as a viewer shows them
(:func:`read_display_pixels`: modality LUT applied, MONOCHROME1 inverted). Anything unreadable, undecodable
or too large is one :class:`DicomReadError` (a ValueError) that names the file."""

from __future__ import annotations

import os

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder

from engine.dicom.dataset import CODEC_PACKAGES, CodecUnavailableError


def _pixel_array(ds: Dataset) -> np.ndarray:
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax.is_compressed and not get_decoder(syntax).is_available:
        package = CODEC_PACKAGES.get(syntax, "a pydicom pixel data plugin for this transfer syntax")
        raise CodecUnavailableError(f"reading {syntax.name} needs the Python package {package}")
    return ds.pixel_array


MAX_READ_PIXELS = 1 << 28  # 256 Mpixel (16384 x 16384): far beyond any radiograph, short of exhausting memory


class DicomReadError(ValueError):
    """A file that cannot be read as a DICOM image; the message starts with the file's path."""


def _read_dataset(path: str | os.PathLike[str]) -> Dataset:
    """The file's dataset with its size checked; DicomReadError (naming the file) for anything unreadable."""
    try:
        ds = pydicom.dcmread(path)
    except OSError:
        raise  # a missing or unreadable file: OSError already names it
    except Exception as exc:  # pydicom raises many kinds; all mean "not a DICOM file we can read"
        raise DicomReadError(f"{path}: not a readable DICOM image ({exc})") from None
    try:
        sizes = [int(ds.get(key) or 1) for key in ("Rows", "Columns", "NumberOfFrames", "SamplesPerPixel")]
    except (TypeError, ValueError) as exc:
        raise DicomReadError(f"{path}: not a readable DICOM image (bad image size: {exc})") from None
    if np.prod(sizes, dtype=np.float64) > MAX_READ_PIXELS:
        rows, columns, frames, _ = sizes
        raise DicomReadError(
            f"{path}: too large: {rows} x {columns} x {frames} pixels (at most {MAX_READ_PIXELS:,} are read)"
        )
    return ds


def _decoded(ds: Dataset, path: str | os.PathLike[str]) -> np.ndarray:
    try:
        return _pixel_array(ds)
    except CodecUnavailableError as exc:
        raise CodecUnavailableError(f"{path}: {exc}") from None
    except Exception as exc:  # truncated pixel data, a bad header, a codec's own error
        raise DicomReadError(f"{path}: not a readable DICOM image ({exc})") from None


def read_pixels(path: str | os.PathLike[str]) -> np.ndarray:
    """Stored pixel values of a single-frame file, (H, W), as the file holds them (no rescale, no VOI).
    DicomReadError (a ValueError) names a file that is not DICOM, cannot be decoded or is too large."""
    return _decoded(_read_dataset(path), path)


def read_display_pixels(path: str | os.PathLike[str]) -> np.ndarray:
    """A file's pixels the way a viewer shows them, higher = brighter: the modality LUT (rescale
    slope and intercept) applied and MONOCHROME1 (0 = white, as most CR/DX files are) inverted.

    Unsigned stored values without a rescale stay integers: MONOCHROME1 becomes ``2**BitsStored - 1
    - stored``. Anything else (a signed CT with its intercept) comes back as float64 for the caller
    to window. Colour files are returned as stored.
    """
    ds = _read_dataset(path)
    return display_values(ds, _decoded(ds, path))


def display_values(ds: Dataset, pixels: np.ndarray, *, voi: bool = False) -> np.ndarray:
    """:func:`read_display_pixels` for a dataset already read and its decoded ``pixels`` (H, W).

    ``voi``: also apply the file's VOI LUT or window, when it has one, between the modality LUT and
    the MONOCHROME1 inversion, where the standard's display pipeline puts it (the training importer
    wants the file's own window; a viewer windows the values itself).
    """
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return pixels
    rescaled = any(key in ds for key in ("ModalityLUTSequence", "RescaleSlope", "RescaleIntercept"))
    values = apply_modality_lut(pixels, ds) if rescaled else pixels
    windowed = voi and ("VOILUTSequence" in ds or "WindowCenter" in ds)
    if windowed:
        values = apply_voi_lut(values, ds)
    if photometric == "MONOCHROME2":
        return values
    if not rescaled and not windowed and pixels.dtype.kind == "u":
        top = (1 << int(ds.get("BitsStored", pixels.dtype.itemsize * 8))) - 1
        return (top - np.minimum(pixels, top)).astype(pixels.dtype)
    values = np.asarray(values, dtype=np.float64)
    return values.max() + values.min() - values
