"""The evaluation's measurements, as small functions over numpy arrays.

Conventions: ``images`` are (N, H, W) float arrays in [0, 1] (0 black, 1 white) at one resolution;
``features`` are (N, D) float arrays; ``probabilities`` are (N, C) with ``labels`` (N,) int in
[0, C). Every function returns plain numbers or arrays; nothing here trains or generates.

Definitions (the report repeats them)
- contrast ratio: Michelson contrast of the robust extremes, ``(p99 - p1) / (p99 + p1)`` of the
  pixel values, in [0, 1]; 0 for a constant image.
- sharpness: variance of the 4-neighbour Laplacian (``[0 1 0; 1 -4 1; 0 1 0]``) over the image's
  interior, pixel values in [0, 1], at the pack's resolution.
- entropy: Shannon entropy in bits of the 256-bin histogram of the pixel values; 0 for a constant
  image, 8 for a uniform histogram.
- Fréchet distance (Heusel et al. 2017): ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)``
  of Gaussians fitted to two feature sets (sample covariance, N - 1).
- patch distance (Carlini et al. 2023, as MediSyn 2.2 uses it): the images are cut into a 4 x 4
  grid of tiles; per tile the root-mean-square pixel difference; the maximum over tiles. 0 for
  identical images, 1 at most; a copy with one region changed still scores high, a copy shifted in
  brightness scores that shift.
- AUROC: the Mann-Whitney U statistic with average ranks for ties (as scikit-learn computes it);
  one-vs-rest per class; NaN when a class has no positives or no negatives.
- Wilson score interval of a proportion; Newcombe's hybrid score interval of a difference of two
  independent proportions (method 10 of Newcombe 1998).
- bootstrap: percentile intervals over resamples of the items with replacement; resamples where a
  statistic is undefined (NaN) are dropped and counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

CHUNK = 256  # images per vectorised step (bounds the temporaries at 224 px to a few hundred MB)


def _per_chunk(function: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
    if len(images) == 0:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate(
        [function(np.asarray(images[i : i + CHUNK], dtype=np.float32)) for i in range(0, len(images), CHUNK)]
    )


# 1. image statistics -----------------------------------------------------------------------------


def contrast_ratio(images: np.ndarray) -> np.ndarray:
    """(N, H, W) in [0, 1] -> (N,) Michelson contrast of the 1st and 99th percentiles."""

    def one(x: np.ndarray) -> np.ndarray:
        low, high = np.percentile(x.reshape(len(x), -1), [1.0, 99.0], axis=1)
        total = high + low
        return np.where(total > 0, (high - low) / np.maximum(total, 1e-12), 0.0)

    return _per_chunk(one, images)


def laplacian_variance(images: np.ndarray) -> np.ndarray:
    """(N, H, W) in [0, 1] -> (N,) variance of the 4-neighbour Laplacian (sharpness; 0 for a flat
    or linear ramp image, 16 for a one-pixel checkerboard of 0 and 1)."""

    def one(x: np.ndarray) -> np.ndarray:
        lap = x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2] + x[:, 1:-1, 2:] - 4.0 * x[:, 1:-1, 1:-1]
        return lap.reshape(len(x), -1).astype(np.float64).var(axis=1)

    return _per_chunk(one, images)


def entropy(images: np.ndarray, bins: int = 256) -> np.ndarray:
    """(N, H, W) in [0, 1] -> (N,) Shannon entropy (bits) of each image's ``bins``-bin histogram."""

    def one(x: np.ndarray) -> np.ndarray:
        n = len(x)
        index = np.clip((x.reshape(n, -1) * bins).astype(np.int64), 0, bins - 1)
        index += (np.arange(n) * bins)[:, None]
        counts = np.bincount(index.ravel(), minlength=n * bins).reshape(n, bins).astype(np.float64)
        p = counts / counts.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, -p * np.log2(p), 0.0)
        return terms.sum(axis=1) + 0.0  # + 0.0: no negative zero

    return _per_chunk(one, images)


# 2. distributions --------------------------------------------------------------------------------


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features, N >= 2 -> mean (D,) and sample covariance (D, D), in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need (N, D) features with N >= 2, not shape {f.shape}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def _sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance of N(mu1, sigma1) and N(mu2, sigma2).

    ``Tr((S1 S2)^1/2)`` is computed as the sum of the square roots of the eigenvalues of the
    symmetric ``S1^1/2 S2 S1^1/2`` (same spectrum), which stays exact for singular covariances.
    """
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    root = _sqrtm_psd(np.asarray(sigma1, np.float64))
    middle = root @ np.asarray(sigma2, np.float64) @ root
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * cross)
    return max(value, 0.0)  # rounding can leave -1e-12 for identical inputs


def frechet_distance_features(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to two feature sets (N, D) and (M, D), N, M >= 2.

    With fewer samples than dimensions (2,048-d Inception features of a few hundred images) the
    same value comes from the centred samples ``A`` (N, D) and ``B`` (M, D): ``Tr(S1) = |A|_F^2 /
    (N - 1)`` and ``Tr((S1 S2)^1/2)`` = the sum of the singular values of ``A B^T`` (N, M) over
    ``sqrt((N - 1)(M - 1))`` (the non-zero spectrum of ``A^T A B^T B`` is that of ``A B^T B A^T``),
    without any D x D matrix.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or len(a) < 2 or len(b) < 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need (N, D) and (M, D) features with N, M >= 2, not shapes {a.shape} and {b.shape}")
    if min(len(a), len(b)) >= a.shape[1]:
        return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    centred_a, centred_b = a - mu_a, b - mu_b
    scale_a, scale_b = len(a) - 1.0, len(b) - 1.0
    cross = np.linalg.svd(centred_a @ centred_b.T, compute_uv=False).sum() / np.sqrt(scale_a * scale_b)
    diff = mu_a - mu_b
    value = float(
        diff @ diff + np.square(centred_a).sum() / scale_a + np.square(centred_b).sum() / scale_b - 2.0 * cross
    )
    return max(value, 0.0)


# 3. memorisation ---------------------------------------------------------------------------------


def patch_distance(a: np.ndarray, b: np.ndarray, grid: int = 4) -> np.ndarray:
    """Pairs of images (N, H, W) in [0, 1] -> (N,) maximum over a ``grid`` x ``grid`` tiling of the
    tiles' RMS difference. Tiles split H and W as evenly as possible (``np.array_split``)."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"need two (N, H, W) arrays of one shape, not {a.shape} and {b.shape}")
    height, width = a.shape[1:]
    if height < grid or width < grid:
        raise ValueError(f"images of {height}x{width} cannot be cut into {grid}x{grid} tiles")
    rows = np.array_split(np.arange(height), grid)
    cols = np.array_split(np.arange(width), grid)
    squared = np.square(a - b, dtype=np.float64)
    tiles = np.empty((len(a), grid * grid))
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            tiles[:, i * grid + j] = squared[:, r[0] : r[-1] + 1, c[0] : c[-1] + 1].mean(axis=(1, 2))
    return np.sqrt(tiles.max(axis=1))


def normalise_rows(features: np.ndarray) -> np.ndarray:
    f = np.asarray(features, dtype=np.float32)
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def nearest_by_cosine(queries: np.ndarray, keys: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For each query row (N, D) the index of the key row (M, D) of highest cosine similarity, and
    that similarity; both (N,)."""
    q, k = normalise_rows(queries), normalise_rows(keys)
    index = np.empty(len(q), dtype=np.int64)
    similarity = np.empty(len(q), dtype=np.float64)
    for start in range(0, len(q), chunk):
        sims = q[start : start + chunk] @ k.T
        index[start : start + chunk] = sims.argmax(axis=1)
        similarity[start : start + chunk] = sims.max(axis=1)
    return index, similarity


def calibrated_copy_ratio(
    query_images: np.ndarray,
    query_features: np.ndarray,
    train_images: np.ndarray,
    train_features: np.ndarray,
    k: int = 50,
    grid: int = 4,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Copying, calibrated against the neighbourhood (in the manner of Carlini et al. 2023, "Extracting
    training data from diffusion models"): for each query its ``k`` nearest training images by feature
    cosine, the patch distance to each, and ``ratio`` = the smallest of them / their mean. A copy of one
    training image is far closer to it than to that image's neighbours (ratio near 0); an image that is
    merely close to many (a flat, low-contrast film is close to every low-contrast film, whatever the
    raw distance) has a ratio near 1. Returns (ratio, index of the closest training image, its patch
    distance), each (N,)."""
    k = max(1, min(k, len(train_features)))
    q, keys = normalise_rows(query_features), normalise_rows(train_features)
    ratio = np.empty(len(q), dtype=np.float64)
    index = np.empty(len(q), dtype=np.int64)
    closest = np.empty(len(q), dtype=np.float64)
    for start in range(0, len(q), 256):
        sims = q[start : start + 256] @ keys.T
        neighbours = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else np.argsort(-sims, axis=1)
        for row, candidates in enumerate(neighbours):
            i = start + row
            query = np.broadcast_to(
                np.asarray(query_images[i], dtype=np.float32), (len(candidates), *query_images.shape[1:])
            )
            distances = patch_distance(query, train_images[candidates].astype(np.float32), grid)
            best = int(np.argmin(distances))
            index[i], closest[i] = candidates[best], distances[best]
            ratio[i] = distances[best] / max(float(distances.mean()), 1e-12)
    return ratio, index, closest


# 4. classification -------------------------------------------------------------------------------


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` (N,), ties sharing their average rank."""
    values = np.asarray(values)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.r_[0, np.flatnonzero(ordered[1:] != ordered[:-1]) + 1]
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` (N,) for the boolean ``positive`` (N,); NaN when
    either class is empty."""
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = average_ranks(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def one_vs_rest_auroc(probabilities: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(C,) AUROC of each class's probability against "this class or not"."""
    labels = np.asarray(labels)
    return np.array([roc_auc(probabilities[:, c], labels == c) for c in range(num_classes)])


def macro_auroc(probabilities: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Mean of the defined one-vs-rest AUROCs; NaN when none is defined."""
    values = one_vs_rest_auroc(probabilities, labels, num_classes)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    if len(labels) == 0:
        return float("nan")
    return float((np.asarray(probabilities).argmax(axis=1) == np.asarray(labels)).mean())


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts: row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predicted)), 1)
    return matrix


# 5. bootstrap ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval; ``dropped`` resamples gave an undefined statistic."""

    low: float
    high: float
    resamples: int
    dropped: int

    def to_json(self) -> list[float | None]:
        return [_finite(self.low), _finite(self.high)]


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def bootstrap_interval(
    statistic: Callable[[np.ndarray], float | np.ndarray],
    n: int,
    resamples: int,
    rng: np.random.Generator,
    level: float = 0.95,
) -> Interval | list[Interval]:
    """Percentile interval of ``statistic(indices)`` over ``resamples`` draws of ``n`` indices with
    replacement. A statistic returning an array gives one interval per element (same draws: paired)."""
    values = np.asarray([statistic(rng.integers(0, n, n)) for _ in range(resamples)], dtype=np.float64)
    tail = (1.0 - level) / 2.0 * 100.0

    def interval(column: np.ndarray) -> Interval:
        finite = column[np.isfinite(column)]
        if len(finite) == 0:
            return Interval(float("nan"), float("nan"), resamples, resamples)
        low, high = np.percentile(finite, [tail, 100.0 - tail])
        return Interval(float(low), float(high), resamples, resamples - len(finite))

    if values.ndim == 1:
        return interval(values)
    return [interval(values[:, i]) for i in range(values.shape[1])]


def mean_interval(values: np.ndarray, resamples: int, rng: np.random.Generator, level: float = 0.95) -> Interval:
    """Bootstrap interval of the mean of ``values`` (N,), vectorised."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n == 0:
        return Interval(float("nan"), float("nan"), resamples, resamples)
    means = np.concatenate(
        [values[rng.integers(0, n, (min(200, resamples - i), n))].mean(axis=1) for i in range(0, resamples, 200)]
    )
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return Interval(float(low), float(high), resamples, 0)


def describe(values: np.ndarray, resamples: int, rng: np.random.Generator) -> dict:
    """Mean (with a bootstrap 95% interval), standard deviation, median, quartiles and count."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return {"n": 0}
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {
        "n": len(values),
        "mean": float(values.mean()),
        "ci95": mean_interval(values, resamples, rng).to_json(),
        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "median": float(median),
        "q1": float(q1),
        "q3": float(q3),
    }


# 6. diversity ------------------------------------------------------------------------------------


def mean_pairwise_cosine_distance(features: np.ndarray) -> float:
    """Mean of ``1 - cos(f_i, f_j)`` over pairs i < j of (N, D) features, N >= 2."""
    f = normalise_rows(features).astype(np.float64)
    n = len(f)
    if n < 2:
        raise ValueError("need at least two items for a pairwise distance")
    sims = f @ f.T
    upper = np.triu_indices(n, k=1)
    return float((1.0 - sims[upper]).mean())


def mean_pairwise_ssim_distance(images: np.ndarray) -> float:
    """Mean of ``1 - SSIM`` over pairs i < j of (N, H, W) images in [0, 1], N >= 2 (the SSIM of
    ``training.train_vae.ssim``: 11-px Gaussian window, sigma 1.5, data range 1)."""
    import torch

    from training.train_vae import ssim

    n = len(images)
    if n < 2:
        raise ValueError("need at least two images for a pairwise distance")
    first, second = np.triu_indices(n, k=1)
    x = torch.from_numpy(np.asarray(images, dtype=np.float32))[:, None]
    window = 11 if min(x.shape[-2:]) >= 11 else (min(x.shape[-2:]) // 2) * 2 - 1
    with torch.no_grad():
        values = ssim(x[first], x[second], data_range=1.0, window_size=window)
    return float((1.0 - values).mean())


# 7. proportions ----------------------------------------------------------------------------------

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n`` (NaNs when ``n`` is 0).

    Unlike the normal approximation it stays inside [0, 1] and keeps its coverage near 0 and 1,
    where the negation check's fractions sit."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_difference(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """Interval of ``k1 / n1 - k2 / n2`` for independent samples from the two Wilson intervals
    (Newcombe 1998, method 10, "hybrid score"); NaNs when either ``n`` is 0."""
    if n1 <= 0 or n2 <= 0:
        return float("nan"), float("nan")
    p1, p2 = k1 / n1, k2 / n2
    low1, high1 = wilson_interval(k1, n1, z)
    low2, high2 = wilson_interval(k2, n2, z)
    d = p1 - p2
    return (
        d - math.sqrt((p1 - low1) ** 2 + (high2 - p2) ** 2),
        d + math.sqrt((high1 - p1) ** 2 + (p2 - low2) ** 2),
    )


__all__ = [
    "Z95",
    "Interval",
    "accuracy",
    "average_ranks",
    "bootstrap_interval",
    "calibrated_copy_ratio",
    "confusion_matrix",
    "contrast_ratio",
    "describe",
    "entropy",
    "frechet_distance",
    "frechet_distance_features",
    "gaussian_stats",
    "laplacian_variance",
    "macro_auroc",
    "mean_interval",
    "mean_pairwise_cosine_distance",
    "mean_pairwise_ssim_distance",
    "nearest_by_cosine",
    "newcombe_difference",
    "normalise_rows",
    "one_vs_rest_auroc",
    "patch_distance",
    "roc_auc",
    "wilson_interval",
]
