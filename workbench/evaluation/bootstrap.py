"""Paired bootstrap of an mIoU difference over images: is model B better than model A on the same
validation images, beyond what the choice of images explains?

Both models are scored on the same N images; each bootstrap sample draws N images with replacement,
sums *both* models' per-image confusion matrices over the drawn images (dataset-level mIoU, as
everywhere else) and records mIoU(B) - mIoU(A). The 2.5 / 97.5 percentiles are the 95 % interval:
when it excludes 0 the difference is unlikely to be an accident of which images were held out.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from .metrics import iou_per_class


@dataclass
class PairedDifference:
    delta: float          # mIoU(B) - mIoU(A) on all images
    low: float            # 95 % interval
    high: float
    images: int
    samples: int
    # per class: IoU of A and of B on all images, B - A and its 95 % interval (NaN: class absent)
    iou_a: np.ndarray = field(default_factory=lambda: np.zeros(0))
    iou_b: np.ndarray = field(default_factory=lambda: np.zeros(0))
    class_low: np.ndarray = field(default_factory=lambda: np.zeros(0))
    class_high: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __str__(self) -> str:
        return (f"{self.delta * 100:+.2f} points (95 % interval {self.low * 100:+.2f} .. {self.high * 100:+.2f}, "
                f"paired bootstrap over {self.images} images, {self.samples} samples)")

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


def batch_iou(cms: np.ndarray) -> np.ndarray:
    """Per-class IoU (B, C) of each (C, C) confusion matrix of a stack (B, C, C); NaN where a class
    is neither present nor predicted."""
    tp = np.diagonal(cms, axis1=1, axis2=2).astype(np.float64)
    denom = cms.sum(1) + cms.sum(2) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)


def batch_miou(cms: np.ndarray) -> np.ndarray:
    """mIoU of each (C, C) confusion matrix of a stack (B, C, C), NaN classes left out."""
    return np.nanmean(batch_iou(cms), axis=1)


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
    iou_a, iou_b = batch_iou(sum_a), batch_iou(sum_b)
    diffs = np.nanmean(iou_b, axis=1) - np.nanmean(iou_a, axis=1)
    all_a, all_b = iou_per_class(cms_a.sum(0)), iou_per_class(cms_b.sum(0))
    delta = float(np.nanmean(all_b) - np.nanmean(all_a))
    low, high = np.percentile(diffs, [2.5, 97.5])
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class absent from every draw: NaN bounds
        class_low, class_high = np.nanpercentile(iou_b - iou_a, [2.5, 97.5], axis=0)
    return PairedDifference(delta, float(low), float(high), n, samples, all_a, all_b, class_low, class_high)
