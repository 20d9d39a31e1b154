"""Paired bootstrap of an mIoU difference over images: is model B better than model A on the same
validation images, beyond what the choice of images explains?

Both models are scored on the same N images; each bootstrap sample draws N images with replacement,
sums *both* models' per-image confusion matrices over the drawn images (dataset-level mIoU, as
everywhere else) and records mIoU(B) - mIoU(A). The 2.5 / 97.5 percentiles are the 95 % interval:
when it excludes 0 the difference is unlikely to be an accident of which images were held out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import iou_per_class


@dataclass
class PairedDifference:
    delta: float          # mIoU(B) - mIoU(A) on all images
    low: float            # 95 % interval
    high: float
    images: int
    samples: int

    def __str__(self) -> str:
        return (f"{self.delta * 100:+.2f} points (95 % interval {self.low * 100:+.2f} .. {self.high * 100:+.2f}, "
                f"paired bootstrap over {self.images} images, {self.samples} samples)")

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


def batch_miou(cms: np.ndarray) -> np.ndarray:
    """mIoU of each (C, C) confusion matrix of a stack (B, C, C), NaN classes left out."""
    tp = np.diagonal(cms, axis1=1, axis2=2).astype(np.float64)
    denom = cms.sum(1) + cms.sum(2) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)
    return np.nanmean(iou, axis=1)


def paired_bootstrap(cms_a: np.ndarray, cms_b: np.ndarray, samples: int = 2000, seed: int = 0) -> PairedDifference:
    """``cms_a``, ``cms_b``: per-image confusion matrices (N, C, C) of two models on the same images."""
    cms_a, cms_b = np.asarray(cms_a, dtype=np.int64), np.asarray(cms_b, dtype=np.int64)
    if cms_a.shape != cms_b.shape or cms_a.ndim != 3:
        raise ValueError(f"per-image confusion matrices differ in shape: {cms_a.shape} vs {cms_b.shape}")
    n, c, _ = cms_a.shape
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=samples)           # (samples, N) draws per image
    sum_a = (counts @ cms_a.reshape(n, -1)).reshape(samples, c, c)
    sum_b = (counts @ cms_b.reshape(n, -1)).reshape(samples, c, c)
    diffs = batch_miou(sum_b) - batch_miou(sum_a)
    delta = float(np.nanmean(iou_per_class(cms_b.sum(0))) - np.nanmean(iou_per_class(cms_a.sum(0))))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return PairedDifference(delta, float(low), float(high), n, samples)
