"""Texture statistics of an image crop: grey-level co-occurrence (scikit-image) and first-order.

These are the targets of self-supervised pretraining (:mod:`mammofuse.training.pretrain`) and,
with the lesion's size, the optional radiomics image token of a model.
"""

from __future__ import annotations

import numpy as np

LEVELS = 32
DISTANCES = (1, 2, 4)
ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "ASM", "correlation")
FIRST_ORDER = ("mean", "std", "skewness", "kurtosis", "entropy", "p10", "p50", "p90")
TEXTURE_NAMES = tuple(f"glcm_{p.lower()}_d{d}" for p in GLCM_PROPS for d in DISTANCES) + FIRST_ORDER
RADIOMICS_NAMES = (*TEXTURE_NAMES, "log_lesion_radius", "lesion_radius_known")
N_TEXTURE = len(TEXTURE_NAMES)
N_RADIOMICS = len(RADIOMICS_NAMES)
RADIOMICS_MIN_STD = 1e-3
"""A feature whose training standard deviation is below this is centred but not scaled (a constant one would explode)."""


def texture_features(crop: np.ndarray) -> np.ndarray:
    """GLCM properties (averaged over four directions, at three distances) and first-order statistics.

    Args:
        crop: (H, W) float pixels in [0, 1].
    """
    from scipy import stats
    from skimage.feature import graycomatrix, graycoprops

    pixels = np.clip(np.nan_to_num(crop.astype(np.float64)), 0.0, 1.0)
    levels = np.minimum((pixels * LEVELS).astype(np.uint8), LEVELS - 1)
    glcm = graycomatrix(levels, DISTANCES, ANGLES, levels=LEVELS, symmetric=True, normed=True)
    texture = [np.nan_to_num(graycoprops(glcm, p)).mean(axis=1) for p in GLCM_PROPS]  # (distances,) each
    flat = pixels.ravel()
    hist = np.bincount(levels.ravel(), minlength=LEVELS) / flat.size
    std = float(flat.std())
    first = [
        float(flat.mean()), std,
        float(stats.skew(flat)) if std > 1e-8 else 0.0,
        float(stats.kurtosis(flat)) if std > 1e-8 else 0.0,
        float(stats.entropy(hist, base=2)),
        *np.percentile(flat, (10, 50, 90)).tolist(),
    ]
    return np.concatenate([*texture, np.asarray(first)]).astype(np.float32)


def radiomics_features(crop: np.ndarray, radius: float | None) -> np.ndarray:
    """:func:`texture_features` plus the lesion's log radius (in model-space pixels) and whether it is known."""
    size = [float(np.log1p(radius)), 1.0] if radius else [0.0, 0.0]
    return np.concatenate([texture_features(crop), np.asarray(size, dtype=np.float32)]).astype(np.float32)
