"""Display-side image maths: conversions, DICOM windowing, image-derived presets, CLAHE, enhancement."""

from __future__ import annotations

import cv2
import numpy as np
import pydicom
import pytest

from engine import imaging
from engine.imaging import (
    ENHANCEMENT_PRESETS,
    WindowPreset,
    apply_window,
    clahe,
    enhance,
    float_to_stored,
    histogram,
    rescale_bits,
    stored_to_float,
    to_12bit,
    to_uint8,
    to_uint16,
    unsharp_mask,
    vignette,
    window_for_range,
    window_presets,
)


def gradient(height: int = 64, width: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return (0.7 * yy / (height - 1) + 0.3 * xx / (width - 1)).astype(np.float32)


def dicom_linear_reference(x: float, center: float, width: float) -> float:
    """PS3.3 C.11.2.1.2.1 written out literally, output range 0..255, before rounding."""
    if x <= center - 0.5 - (width - 1) / 2:
        return 0.0
    if x > center - 0.5 + (width - 1) / 2:
        return 255.0
    return ((x - (center - 0.5)) / (width - 1) + 0.5) * 255.0


@pytest.fixture(scope="module")
def real_radiograph() -> np.ndarray:
    """RG1_UNCI.dcm (pydicom-data): a real chest CR, turned into MONOCHROME2 stored values."""
    pytest.importorskip("data_store", reason="pydicom-data is not installed (pip install pydicom-data)")
    from pydicom.data import get_testdata_file

    path = get_testdata_file("RG1_UNCI.dcm", download=False)  # never reach for the network
    if path is None:
        pytest.skip("RG1_UNCI.dcm is not in pydicom-data")
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array.astype(np.int64)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    return (2**ds.BitsStored - 1 - pixels).astype(np.uint16)  # dense = bright, as we export


# 1. conversions ---------------------------------------------------------------------------------


def test_conversions_cover_the_full_range() -> None:
    image = np.array([0.0, 0.5, 1.0], dtype=np.float32)
    np.testing.assert_array_equal(to_uint16(image), [0, 32768, 65535])
    np.testing.assert_array_equal(to_uint8(image), [0, 128, 255])
    np.testing.assert_array_equal(to_12bit(image), [0, 2048, 4095])
    assert to_12bit(image).dtype == np.uint16 and to_uint8(image).dtype == np.uint8


@pytest.mark.parametrize("bits", [8, 12, 16])
def test_float_round_trip_within_half_a_step(bits: int) -> None:
    image = gradient()
    back = stored_to_float(float_to_stored(image, bits), bits)
    assert back.dtype == np.float32
    assert np.abs(back - image).max() <= 0.5 / (2**bits - 1) + 1e-7


def test_rescale_bits_is_exact() -> None:
    twelve = np.arange(4096, dtype=np.uint16)
    sixteen = rescale_bits(twelve, 12, 16)
    assert sixteen[0] == 0 and sixteen[-1] == 65535
    np.testing.assert_array_equal(rescale_bits(sixteen, 16, 12), twelve)
    assert rescale_bits(np.array([65535], np.uint16), 16, 8).dtype == np.uint8


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: to_uint16(np.array([np.nan], np.float32)), "NaN"),
        (lambda: to_uint16(np.array([1.01], np.float32)), r"\[0, 1\]"),
        (lambda: to_uint16(np.array([3], np.int32)), "float"),
        (lambda: float_to_stored(gradient(), 17), "bits_stored"),
        (lambda: stored_to_float(np.array([4096], np.uint16), 12), "does not fit in 12 bits"),
        (lambda: stored_to_float(np.array([1.0])), "uint8 or uint16"),
    ],
)
def test_conversion_errors(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# 2. windowing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("center", "width"), [(100.0, 51.0), (2048.0, 4096.0), (10.5, 2.0), (-3.0, 7.5)])
def test_window_matches_the_dicom_formula(center: float, width: float) -> None:
    low_edge = center - 0.5 - (width - 1) / 2
    high_edge = center - 0.5 + (width - 1) / 2
    xs = np.concatenate(
        [np.linspace(low_edge - 5, high_edge + 5, 997), [low_edge, high_edge, np.nextafter(low_edge, np.inf)]]
    )
    xs = np.concatenate([xs, [np.nextafter(high_edge, np.inf), center - 0.5]])
    expected = np.floor(np.array([dicom_linear_reference(x, center, width) for x in xs]) + 0.5)
    np.testing.assert_array_equal(apply_window(xs, center, width), expected.astype(np.uint8))


def test_window_edges_exactly() -> None:
    # c = 100, w = 51: black up to 74.5, white above 124.5, 127.5 -> 128 at x = c - 0.5
    x = np.array([74, 74.5, 75, 99.5, 124, 124.5, 125])
    np.testing.assert_array_equal(apply_window(x, 100, 51), [0, 0, 3, 128, 252, 255, 255])
    # w = 1 is a threshold at c - 0.5
    np.testing.assert_array_equal(apply_window(np.array([9, 9.5, 9.6, 10]), 10, 1), [0, 0, 255, 255])


def test_window_for_range_maps_ends_to_black_and_white() -> None:
    window = window_for_range(1000, 3000)
    assert (window.window_center, window.window_width) == (2000.5, 2001.0)
    out = apply_window(np.array([999, 1000, 3000, 3001], np.uint16), window.window_center, window.window_width)
    np.testing.assert_array_equal(out, [0, 0, 255, 255])


def test_invert_is_the_display_complement() -> None:
    pixels = to_12bit(gradient())
    normal = apply_window(pixels, 2048, 4096)
    inverted = apply_window(pixels, 2048, 4096, invert=True)
    np.testing.assert_array_equal(inverted.astype(int), 255 - normal.astype(int))
    assert normal.shape == pixels.shape and normal.dtype == np.uint8


@pytest.mark.parametrize(("center", "width"), [(100, 0.5), (100, 0), (float("nan"), 10), (100, float("inf"))])
def test_window_arguments_are_checked(center: float, width: float) -> None:
    with pytest.raises(ValueError, match="window"):
        apply_window(np.zeros(3), center, width)
    with pytest.raises(ValueError, match="window"):
        WindowPreset("X", center, width)


def test_preset_names_are_checked() -> None:
    with pytest.raises(ValueError, match="backslash"):
        WindowPreset("A\\B", 10, 10)
    with pytest.raises(ValueError, match="unknown window preset"):
        window_presets(np.zeros((4, 4), np.uint16) + np.arange(4, dtype=np.uint16), ["LIVER"])
    with pytest.raises(ValueError, match="stored pixels"):
        window_presets(gradient())


def test_presets_on_a_real_radiograph_are_ordered(real_radiograph: np.ndarray) -> None:
    presets = {p.name: p for p in window_presets(real_radiograph)}
    assert list(presets) == ["DEFAULT", "LUNG", "MEDIASTINUM", "BONE"]
    lung, mediastinum, bone, default = (presets[n] for n in ("LUNG", "MEDIASTINUM", "BONE", "DEFAULT"))
    # lungs are the dark part of the chest, bone the brightest: centres rise in that order
    assert lung.window_center < mediastinum.window_center < bone.window_center
    # the soft-tissue and bone windows are narrower (more contrast) than the whole-image default
    assert mediastinum.window_width < default.window_width and bone.window_width < default.window_width
    low, high = int(real_radiograph.min()), int(real_radiograph.max())
    for preset in presets.values():
        assert low <= preset.window_center <= high and preset.window_width <= high - low + 1
    # the default window uses the display range: no large black or white areas
    shown = apply_window(real_radiograph, default.window_center, default.window_width)
    assert np.mean(shown == 0) < 0.02 and np.mean(shown == 255) < 0.02 and shown.std() > 40
    # the lung window shows the lung fields (dark half of the body) with more grey levels than default
    dark = real_radiograph <= np.percentile(real_radiograph, 40)
    lung_view = apply_window(real_radiograph, lung.window_center, lung.window_width)
    assert lung_view[dark].std() > shown[dark].std()


def test_presets_ignore_padding() -> None:
    image = to_12bit(gradient(100, 100) * 0.5 + 0.25)
    padded = image.copy()
    padded[:, :20] = 0  # a collimated border: a fifth of the image at the minimum
    with_border = window_presets(padded)
    without = window_presets(image[:, 20:])
    for a, b in zip(with_border, without, strict=True):
        assert abs(a.window_center - b.window_center) <= 5 and abs(a.window_width - b.window_width) <= 10
    flat = np.full((8, 8), 7, np.uint16)
    (preset,) = window_presets(flat, ["DEFAULT"])
    assert preset.window_width == 1 and preset.window_center == 7.5


# 3. CLAHE and enhancement -----------------------------------------------------------------------


def low_contrast_texture(dtype: type = np.uint16) -> np.ndarray:
    rng = np.random.default_rng(0)
    image = 0.45 + 0.05 * gradient(128, 128) + 0.01 * rng.standard_normal((128, 128)).astype(np.float32)
    return float_to_stored(np.clip(image, 0, 1), 16 if dtype == np.uint16 else 8)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
def test_clahe_adds_contrast_keeps_shape_and_dtype(dtype: type) -> None:
    image = low_contrast_texture(dtype)
    out = clahe(image)
    assert out.shape == image.shape and out.dtype == image.dtype
    assert out.astype(float).std() > 2 * image.astype(float).std()
    assert np.array_equal(image, low_contrast_texture(dtype))  # input untouched


def test_clahe_on_12_bit_and_float_stays_in_range() -> None:
    sixteen = low_contrast_texture()
    twelve = rescale_bits(sixteen, 16, 12)
    out = clahe(twelve, bits_stored=12)
    assert out.dtype == np.uint16 and int(out.max()) <= 4095 and out.std() > 2 * twelve.std()
    # the same picture at 12 or 16 bits gets the same equalisation (up to 12-bit quantisation, amplified)
    np.testing.assert_allclose(stored_to_float(out, 12), stored_to_float(clahe(sixteen)), atol=0.005)
    as_float = clahe(stored_to_float(twelve, 12))
    assert as_float.dtype == np.float32 and as_float.min() >= 0.0 and as_float.max() <= 1.0
    with pytest.raises(ValueError, match="does not fit in 12 bits"):
        clahe(sixteen, bits_stored=12)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_clahe_clip_limit_matters_at_every_depth(dtype: type) -> None:
    """OpenCV's own 16-bit CLAHE ignores the clip limit for tiles under 32,768 pixels; ours does not."""
    image = low_contrast_texture(dtype)
    spreads = [clahe(image, clip).astype(float).std() for clip in (1.0, 2.0, 4.0)]
    assert spreads[0] < spreads[1] < spreads[2]


@pytest.mark.parametrize(("shape", "tile_grid"), [((128, 128), (8, 8)), ((100, 77), (4, 3)), ((128, 96), (3, 5))])
@pytest.mark.parametrize("clip_limit", [1.0, 2.0, 40.0])
def test_clahe_matches_opencv_on_8_bit(shape: tuple[int, int], tile_grid: tuple[int, int], clip_limit: float) -> None:
    rng = np.random.default_rng(1)
    image = (rng.random(shape) * 60 + np.linspace(0, 150, shape[1])[None, :]).astype(np.uint8)
    ours = clahe(image, clip_limit, tile_grid).astype(int)
    reference = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=tile_grid).apply(image).astype(int)
    assert np.abs(ours - reference).max() <= 1  # OpenCV rounds its tables to 8 bits before blending


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"clip_limit": 0}, "clip_limit"),
        ({"tile_grid": (0, 8)}, "tile_grid"),
        ({"tile_grid": (8,)}, "tile_grid"),
        ({"bins": 1}, "bins"),
    ],
)
def test_clahe_arguments_are_checked(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        clahe(low_contrast_texture(), **options)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one"):
        clahe(np.zeros((2, 8, 8), np.uint16))


def test_unsharp_mask_overshoots_at_an_edge() -> None:
    step = np.full((32, 32), 0.3, np.float32)
    step[:, 16:] = 0.7
    sharp = unsharp_mask(step, sigma=2.0, amount=1.0)
    assert sharp[:, 15].mean() < 0.3 and sharp[:, 16].mean() > 0.7  # darker / brighter either side
    np.testing.assert_allclose(sharp[:, :4], 0.3, atol=1e-5)  # flat areas unchanged


def test_vignette_darkens_corners_only() -> None:
    flat = np.full((65, 65), 0.8, np.float32)
    out = vignette(flat, strength=0.2)
    assert out[32, 32] == pytest.approx(0.8) and out[0, 0] == pytest.approx(0.8 * 0.8)
    assert out[0, 32] > out[0, 0]


@pytest.mark.parametrize("name", list(ENHANCEMENT_PRESETS))
def test_enhancement_presets(name: str) -> None:
    image = gradient(96, 80) * 0.6 + 0.2
    out = enhance(image, name)
    assert out.shape == image.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    if name == "none":
        np.testing.assert_array_equal(out, image)
    else:
        assert not np.allclose(out, image)


def test_enhance_checks_its_input() -> None:
    with pytest.raises(ValueError, match="unknown enhancement preset"):
        enhance(gradient(), "hdr")
    with pytest.raises(ValueError, match="one"):
        enhance(np.stack([gradient(), gradient()]), "clahe")


# 4. histogram -----------------------------------------------------------------------------------


def test_histogram_bins() -> None:
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    counts, edges = histogram(pixels)
    assert counts.dtype == np.int64 and counts.sum() == 256 and (counts == 1).all() and len(edges) == 257
    twelve = to_12bit(gradient())
    counts, edges = histogram(twelve, 64, value_range=(0, 4096))
    assert counts.sum() == twelve.size and edges[-1] == 4096
    counts, _ = histogram(gradient(), 10)
    assert counts.sum() == gradient().size
    with pytest.raises(ValueError, match="bins"):
        histogram(pixels, 0)
    with pytest.raises(ValueError, match="value_range"):
        histogram(np.zeros(3, np.int16))


def test_module_is_pure_numpy_and_opencv() -> None:
    assert set(imaging.__all__) <= set(dir(imaging))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_encode_png_is_lossless_at_8_and_16_bits(dtype) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, np.iinfo(dtype).max + 1, size=(17, 23), dtype=dtype)
    png = imaging.encode_png(image)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    back = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.dtype == dtype and np.array_equal(back, image)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((4, 4), np.float32), "float32"),  # a float image is not stored pixels: convert first
        (np.zeros((2, 4, 4), np.uint8), r"\(2, 4, 4\)"),  # a batch, or colour, is not one greyscale image
        (np.zeros((4, 4), np.int16), "int16"),
    ],
)
def test_encode_png_refuses_what_is_not_one_greyscale_image(image: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=rf"PNG needs one \(H, W\) uint8 or uint16 image, not .*{message}"):
        imaging.encode_png(image)
