"""Display-side image maths shared by the desktop viewer and the DICOM export (numpy + OpenCV).

Conventions
- A *float image* is float32 (H, W) or (B, H, W) with values in [0, 1], 0 = black (MONOCHROME2):
  what ``GenerationResult.images`` holds.
- *Stored pixels* are unsigned integers: uint8 (0..255), 12-bit in uint16 (0..4095) or 16-bit
  (0..65535). Window centres and widths are always in stored-pixel units, as DICOM writes them.
- CR/DX pixel values are not Hounsfield units, so the familiar CT presets (lung -600/1500 ...)
  mean nothing here: :func:`window_presets` derives lung / mediastinum / bone windows from the
  image's own histogram (percentiles of the pixels inside the exposed field).

Every function is pure: it returns a new array and never changes its input.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import cv2
import numpy as np

MAX_8BIT = 255
MAX_12BIT = 4095
MAX_16BIT = 65535


# 1. conversions ---------------------------------------------------------------------------------


def _check_float01(image: np.ndarray, what: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"{what} must be a float array with values in [0, 1], not {image.dtype}")
    if image.size and not np.isfinite(image).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    if image.size and (image.min() < 0.0 or image.max() > 1.0):
        raise ValueError(f"{what} values must lie in [0, 1]; found {image.min():g}..{image.max():g}")
    return image


def float_to_stored(image: np.ndarray, bits_stored: int) -> np.ndarray:
    """Float image in [0, 1] -> stored pixels 0..2**bits_stored-1 (uint8 for <= 8 bits, else uint16).

    Rounds to nearest, so ``stored_to_float(float_to_stored(x, b), b)`` is within half a step of x.
    """
    if not isinstance(bits_stored, int) or not 1 <= bits_stored <= 16:
        raise ValueError(f"bits_stored must be a whole number from 1 to 16, not {bits_stored!r}")
    image = _check_float01(image)
    dtype = np.uint8 if bits_stored <= 8 else np.uint16
    return np.round(image.astype(np.float64) * (2**bits_stored - 1)).astype(dtype)


def stored_to_float(pixels: np.ndarray, bits_stored: int | None = None) -> np.ndarray:
    """Stored pixels -> float32 in [0, 1]; ``bits_stored`` defaults to the dtype's full width."""
    pixels = np.asarray(pixels)
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"stored pixels must be uint8 or uint16, not {pixels.dtype}")
    full = pixels.dtype.itemsize * 8
    bits = full if bits_stored is None else bits_stored
    if not isinstance(bits, int) or not 1 <= bits <= full:
        raise ValueError(f"bits_stored must be a whole number from 1 to {full} for {pixels.dtype}, not {bits!r}")
    maximum = 2**bits - 1
    if pixels.size and int(pixels.max()) > maximum:
        raise ValueError(f"pixel value {int(pixels.max())} does not fit in {bits} bits (maximum {maximum})")
    return (pixels.astype(np.float32) / np.float32(maximum)).astype(np.float32)


def to_uint16(image: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> uint16 0..65535."""
    return float_to_stored(image, 16)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> uint8 0..255."""
    return float_to_stored(image, 8)


def to_12bit(image: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> uint16 holding 12-bit values 0..4095."""
    return float_to_stored(image, 12)


def rescale_bits(pixels: np.ndarray, bits_from: int, bits_to: int) -> np.ndarray:
    """Integer pixels of ``bits_from`` bits -> ``bits_to`` bits, keeping 0 -> 0 and max -> max (rounded)."""
    for bits in (bits_from, bits_to):
        if not isinstance(bits, int) or not 1 <= bits <= 16:
            raise ValueError(f"bit depths must be whole numbers from 1 to 16, not {bits!r}")
    stored_to_float(pixels, bits_from)  # validates dtype and range
    max_from, max_to = 2**bits_from - 1, 2**bits_to - 1
    # exact integer rounding: (x * max_to + max_from // 2) // max_from
    scaled = (np.asarray(pixels, dtype=np.int64) * max_to + max_from // 2) // max_from
    return scaled.astype(np.uint8 if bits_to <= 8 else np.uint16)


def encode_png(image: np.ndarray) -> bytes:
    """One (H, W) uint8 or uint16 greyscale image -> PNG bytes: lossless, 8- or 16-bit as the dtype.

    The one PNG encoder of the project (the CLI, the app's case library and exports, training's sample
    grids, the importers). Anything else (a float image, a batch, colour) is a ValueError: convert first.
    """
    image = np.asarray(image)
    if image.dtype not in (np.uint8, np.uint16) or image.ndim != 2:
        raise ValueError(f"a PNG needs one (H, W) uint8 or uint16 image, not {image.dtype} {image.shape}")
    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"PNG encoding failed ({image.dtype} {image.shape})")
    return buffer.tobytes()


# 2. windowing (DICOM VOI LUT) -------------------------------------------------------------------


@dataclass(frozen=True)
class WindowPreset:
    """A labelled window in stored-pixel units (DICOM WindowCenter / WindowWidth / Explanation)."""

    name: str
    window_center: float
    window_width: float

    def __post_init__(self) -> None:
        _check_window(self.window_center, self.window_width)
        if not self.name or len(self.name) > 64 or "\\" in self.name:
            raise ValueError(f"window name must be 1 to 64 characters without a backslash, not {self.name!r}")


def _check_window(window_center: float, window_width: float) -> None:
    if not math.isfinite(window_center):
        raise ValueError(f"window centre must be a finite number, not {window_center!r}")
    if not math.isfinite(window_width) or window_width < 1:
        raise ValueError(f"window width must be at least 1 (DICOM PS3.3 C.11.2.1.2), not {window_width!r}")


def apply_window(image: np.ndarray, window_center: float, window_width: float, *, invert: bool = False) -> np.ndarray:
    """Stored pixels (any shape, any real dtype) -> uint8 display values by DICOM's LINEAR VOI function.

    PS3.3 C.11.2.1.2.1, with c = centre, w = width, output range 0..255::

        x <= c - 0.5 - (w - 1) / 2      -> 0
        x >  c - 0.5 + (w - 1) / 2      -> 255
        otherwise  ((x - (c - 0.5)) / (w - 1) + 0.5) * 255, rounded half up

    A width of 1 is a threshold at c - 0.5. ``invert`` flips the output (255 - y), a display toggle
    that leaves the data and its photometric interpretation alone.
    """
    _check_window(float(window_center), float(window_width))
    x = np.asarray(image, dtype=np.float64)
    low = window_center - 0.5 - (window_width - 1) / 2
    high = window_center - 0.5 + (window_width - 1) / 2
    if window_width == 1:
        y = np.where(x <= low, 0.0, 255.0)
    else:
        y = ((x - (window_center - 0.5)) / (window_width - 1) + 0.5) * 255.0
        y = np.where(x <= low, 0.0, np.where(x > high, 255.0, y))
    out = np.floor(np.clip(y, 0.0, 255.0) + 0.5).astype(np.uint8)
    return (255 - out).astype(np.uint8) if invert else out


def window_for_range(low: float, high: float, name: str = "RANGE") -> WindowPreset:
    """The window that maps stored value ``low`` to black and ``high`` to white (integer pixels)."""
    low_i, high_i = math.floor(low), math.ceil(high)
    if high_i < low_i:
        raise ValueError(f"window range must have low <= high, not {low}..{high}")
    # From the LINEAR formula: low = c - 0.5 - (w - 1)/2 and high = c - 0.5 + (w - 1)/2.
    width = high_i - low_i + 1
    return WindowPreset(name, (low_i + high_i + 1) / 2, float(width))


# Percentile ranges (of the pixels inside the exposed field, MONOCHROME2: dense = bright) checked
# on RG1_UNCI.dcm and NIH ChestX-ray14 frontal films. Lung fields are the darker part of the body:
# a wide window low in the histogram. Mediastinum and soft tissue: a narrower window over the
# bright half. Bone: the brightest tail, wide so that cortex and spine do not saturate.
PRESET_PERCENTILES: dict[str, tuple[float, float]] = {
    "DEFAULT": (0.5, 99.5),
    "LUNG": (1.0, 75.0),
    "MEDIASTINUM": (30.0, 95.0),
    "BONE": (50.0, 99.9),
}


def exposed_pixels(image: np.ndarray) -> np.ndarray:
    """The pixels used for presets: all except those at the image's own minimum or maximum.

    Values pinned at either end are padding, collimation or clipping, not anatomy; they are kept
    only when dropping them would leave fewer than 10 % of the pixels.
    """
    flat = np.asarray(image).ravel()
    low, high = flat.min(), flat.max()
    inside = flat[(flat > low) & (flat < high)]
    return inside if inside.size >= 0.1 * flat.size else flat


def window_presets(image: np.ndarray, names: Sequence[str] | None = None) -> list[WindowPreset]:
    """Windows computed from the image itself, in its stored-pixel units.

    ``image``: stored pixels (uint8 / uint16, MONOCHROME2) of any shape. ``names`` picks from
    PRESET_PERCENTILES (default: all, in the order DEFAULT, LUNG, MEDIASTINUM, BONE).
    """
    image = np.asarray(image)
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(
            f"window presets need stored pixels (uint8 or uint16), not {image.dtype}: "
            "convert with to_12bit / to_uint16 first"
        )
    if image.size == 0:
        raise ValueError("window presets need a non-empty image")
    names = list(PRESET_PERCENTILES) if names is None else list(names)
    unknown = [name for name in names if name not in PRESET_PERCENTILES]
    if unknown:
        raise ValueError(f"unknown window preset(s) {unknown}: choose from {', '.join(PRESET_PERCENTILES)}")
    pixels = exposed_pixels(image)
    presets = []
    for name in names:
        low, high = np.percentile(pixels, PRESET_PERCENTILES[name])
        presets.append(window_for_range(float(low), float(high), name))
    return presets


# 3. contrast enhancement ------------------------------------------------------------------------


def clahe(
    image: np.ndarray,
    clip_limit: float = 2.0,
    tile_grid: tuple[int, int] = (8, 8),
    *,
    bins: int = 256,
    bits_stored: int | None = None,
) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of one (H, W) uint8 / uint16 / float [0, 1] image.

    Returns the same shape and dtype. ``tile_grid`` is (columns, rows) of tiles, as in OpenCV;
    ``clip_limit`` is in OpenCV's units (multiples of the mean count per histogram bin). 2.0 with
    8x8 tiles is the chest X-ray habit; OpenCV's own default of 40 is far too strong.

    Why not ``cv2.createCLAHE`` for 16-bit data: OpenCV histograms uint16 tiles in 65,536 bins and
    sets the clip to ``int(clip_limit * tile_pixels / 65536)``, at least 1, which for any tile under
    32,768 pixels makes every clip limit the same. This is OpenCV's algorithm (same tiles, clipping,
    redistribution and bilinear blending) with ``bins`` histogram bins over the stored range,
    so the clip limit means on 12/16-bit data what it means on 8-bit data. Within a bin the
    mapping is interpolated, so 16-bit output keeps its fine grey levels. On uint8 with 256 bins it
    matches OpenCV to +-1 (OpenCV rounds its tables to 8 bits first).

    ``bits_stored``: the significant bits of uint16 data (default 16); pass 12 for 0..4095 values.
    """
    # 1. check the arguments; float images go through 16 bits
    if not math.isfinite(clip_limit) or clip_limit <= 0:
        raise ValueError(f"clip_limit must be a positive number, not {clip_limit!r}")
    if len(tile_grid) != 2 or any(not isinstance(n, int) or n < 1 for n in tile_grid):
        raise ValueError(f"tile_grid must be two positive whole numbers (columns, rows), not {tile_grid!r}")
    if not isinstance(bins, int) or not 2 <= bins <= 65536:
        raise ValueError(f"bins must be a whole number from 2 to 65536, not {bins!r}")
    image = np.asarray(image)
    if image.ndim != 2 or min(image.shape) < 1:
        raise ValueError(f"clahe works on one (H, W) image, not shape {image.shape}")
    if np.issubdtype(image.dtype, np.floating):
        return stored_to_float(clahe(to_uint16(image), clip_limit, tile_grid, bins=bins))
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"clahe needs uint8, uint16 or float [0, 1] pixels, not {image.dtype}")
    bits = image.dtype.itemsize * 8 if bits_stored is None else bits_stored
    stored_to_float(image[:1, :1], bits)  # checks bits_stored against the dtype
    if int(image.max()) > 2**bits - 1:
        raise ValueError(f"pixel value {int(image.max())} does not fit in {bits} bits")
    maximum = 2**bits - 1
    tiles_x, tiles_y = tile_grid
    height, width = image.shape

    # 2. tile histograms over an image padded (reflect-101) to whole tiles; like OpenCV, once one side
    #    needs padding both get tiles - size % tiles rows / columns (a whole tile where it divides)
    if height % tiles_y or width % tiles_x:
        pad = ((0, tiles_y - height % tiles_y), (0, tiles_x - width % tiles_x))
        padded = np.pad(image, pad, mode="reflect")
    else:
        padded = image
    tile_h, tile_w = padded.shape[0] // tiles_y, padded.shape[1] // tiles_x
    tile_pixels = tile_h * tile_w
    bin_of = (padded.astype(np.int64) * bins) // (maximum + 1)
    rows = np.arange(padded.shape[0]) // tile_h
    cols = np.arange(padded.shape[1]) // tile_w
    tile_of = rows[:, None] * tiles_x + cols[None, :]
    hist = np.bincount((tile_of * bins + bin_of).ravel(), minlength=tiles_y * tiles_x * bins)
    hist = hist.reshape(tiles_y * tiles_x, bins)

    # 3. clip each histogram and hand the excess back: evenly, then one by one at a stride
    limit = max(int(clip_limit * tile_pixels / bins), 1)
    excess = np.maximum(hist - limit, 0).sum(axis=1)
    hist = np.minimum(hist, limit) + (excess // bins)[:, None]
    residual = excess % bins
    stride = np.maximum(bins // np.maximum(residual, 1), 1)
    index = np.arange(bins)[None, :]
    hist += ((index % stride[:, None] == 0) & (index // stride[:, None] < residual[:, None])).astype(hist.dtype)

    # 4. mapping tables: the cumulative histogram at each bin's upper edge, scaled to the output range
    knots = np.zeros((tiles_y * tiles_x, bins + 1), np.float64)
    knots[:, 1:] = np.cumsum(hist, axis=1) * (maximum / tile_pixels)
    knots = knots.ravel()

    # 5. each pixel: interpolate within its bin, then bilinearly between the four nearest tile centres
    position = (image.astype(np.float64) + 1.0) * (bins / (maximum + 1))  # in (0, bins]
    knot = np.minimum(np.floor(position).astype(np.int64), bins - 1)
    within = position - knot

    def axis_weights(size: int, tile: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        coordinate = np.arange(size) / tile - 0.5
        first = np.floor(coordinate).astype(np.int64)
        weight = coordinate - first
        return np.clip(first, 0, count - 1), np.clip(first + 1, 0, count - 1), weight

    y1, y2, wy = axis_weights(height, tile_h, tiles_y)
    x1, x2, wx = axis_weights(width, tile_w, tiles_x)

    def mapped(ty: np.ndarray, tx: np.ndarray) -> np.ndarray:
        base = (ty[:, None] * tiles_x + tx[None, :]) * (bins + 1) + knot
        return knots[base] * (1.0 - within) + knots[base + 1] * within

    top = mapped(y1, x1) * (1.0 - wx[None, :]) + mapped(y1, x2) * wx[None, :]
    bottom = mapped(y2, x1) * (1.0 - wx[None, :]) + mapped(y2, x2) * wx[None, :]
    result = top * (1.0 - wy[:, None]) + bottom * wy[:, None]
    return np.clip(np.round(result), 0, maximum).astype(image.dtype)


def stretch(image: np.ndarray, low_percentile: float = 0.5, high_percentile: float = 99.5) -> np.ndarray:
    """Float image -> float image with the given percentiles mapped to 0 and 1 (a linear window)."""
    image = _check_float01(image)
    if not 0.0 <= low_percentile < high_percentile <= 100.0:
        raise ValueError(f"need 0 <= low < high <= 100 percentiles, not {low_percentile}, {high_percentile}")
    low, high = np.percentile(image, (low_percentile, high_percentile))
    if high <= low:
        return image.astype(np.float32, copy=True)
    return np.clip((image - low) / (high - low), 0.0, 1.0).astype(np.float32)


def unsharp_mask(image: np.ndarray, sigma: float = 2.0, amount: float = 0.5) -> np.ndarray:
    """Edge enhancement: image + amount * (image - gaussian_blur(image, sigma)), clipped to [0, 1]."""
    image = _check_float01(image)
    if not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a positive number of pixels, not {sigma!r}")
    if not math.isfinite(amount) or amount < 0:
        raise ValueError(f"amount must be zero or more, not {amount!r}")
    source = image.astype(np.float32)
    blurred = cv2.GaussianBlur(source, (0, 0), sigmaX=float(sigma), borderType=cv2.BORDER_REFLECT)
    return np.clip(source + np.float32(amount) * (source - blurred), 0.0, 1.0).astype(np.float32)


def vignette(image: np.ndarray, strength: float = 0.15) -> np.ndarray:
    """Darken towards the corners like a film's fall-off: multiply by 1 - strength * r**2 (r = 1 at corners)."""
    image = _check_float01(image)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"vignette strength must be from 0 to 1, not {strength!r}")
    height, width = image.shape[-2:]
    yy = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
    xx = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    falloff = 1.0 - np.float32(strength) * (xx**2 + yy**2) / 2.0
    return np.clip(image * falloff, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class EnhancementPreset:
    """A named chain of float-image steps, applied in order by :func:`enhance`."""

    name: str
    description: str
    steps: tuple[Callable[[np.ndarray], np.ndarray], ...]


ENHANCEMENT_PRESETS: dict[str, EnhancementPreset] = {
    preset.name: preset
    for preset in (
        EnhancementPreset("none", "the image as generated", ()),
        EnhancementPreset("window", "percentile window 0.5-99.5 %", (partial(stretch),)),
        EnhancementPreset("clahe", "CLAHE clip 2.0, 8x8 tiles", (partial(clahe, clip_limit=2.0, tile_grid=(8, 8)),)),
        EnhancementPreset("edges", "unsharp mask sigma 2 px, amount 0.6", (partial(unsharp_mask, amount=0.6),)),
        EnhancementPreset(
            "radiograph",
            "window, CLAHE 1.5, unsharp mask 0.4, vignette 0.15",
            (
                partial(stretch),
                partial(clahe, clip_limit=1.5, tile_grid=(8, 8)),
                partial(unsharp_mask, sigma=2.0, amount=0.4),
                partial(vignette, strength=0.15),
            ),
        ),
    )
}


def enhance(image: np.ndarray, preset: str) -> np.ndarray:
    """Float image (H, W) in [0, 1] -> float32 (H, W) through a named ENHANCEMENT_PRESETS chain."""
    if preset not in ENHANCEMENT_PRESETS:
        raise ValueError(f"unknown enhancement preset {preset!r}: choose from {', '.join(ENHANCEMENT_PRESETS)}")
    result = _check_float01(image).astype(np.float32, copy=True)
    if result.ndim != 2:
        raise ValueError(f"enhance works on one (H, W) image, not shape {result.shape}")
    for step in ENHANCEMENT_PRESETS[preset].steps:
        result = step(result)
    return result


# 4. histogram -----------------------------------------------------------------------------------


def histogram(
    image: np.ndarray, bins: int = 256, *, value_range: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Counts (bins,) int64 and edges (bins + 1,) float64.

    The range defaults to the dtype's: [0, 1] for floats, [0, max + 1) for integers (so each of
    256 bins of a uint8 image holds exactly one value); pass ``value_range=(0, 4096)`` for 12-bit.
    """
    if not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive whole number, not {bins!r}")
    image = np.asarray(image)
    if value_range is None:
        if np.issubdtype(image.dtype, np.floating):
            value_range = (0.0, 1.0)
        elif np.issubdtype(image.dtype, np.unsignedinteger):
            value_range = (0.0, float(np.iinfo(image.dtype).max) + 1.0)
        else:
            raise ValueError(f"histogram needs float or unsigned pixels (or a value_range), not {image.dtype}")
    low, high = value_range
    if not high > low:
        raise ValueError(f"value_range must have low < high, not {value_range!r}")
    counts, edges = np.histogram(image, bins=bins, range=(low, high))
    return counts.astype(np.int64), edges


__all__ = [
    "ENHANCEMENT_PRESETS",
    "MAX_8BIT",
    "MAX_12BIT",
    "MAX_16BIT",
    "PRESET_PERCENTILES",
    "EnhancementPreset",
    "WindowPreset",
    "apply_window",
    "clahe",
    "enhance",
    "exposed_pixels",
    "float_to_stored",
    "histogram",
    "rescale_bits",
    "stored_to_float",
    "stretch",
    "to_12bit",
    "to_uint8",
    "to_uint16",
    "unsharp_mask",
    "vignette",
    "window_for_range",
    "window_presets",
]
