"""Confusion matrices and IoU over a whole set of images (dataset-level, as nnU-Net and smp report).

mIoU is the mean of per-class IoU over all schema classes, background included; a class absent from
both ground truth and prediction has IoU NaN and is left out of the mean.
"""

from __future__ import annotations

import numpy as np
import torch

from ..inference.postprocess import probs_to_labels


def confusion_matrix(gt: np.ndarray | torch.Tensor, pred: np.ndarray | torch.Tensor, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts; rows = ground truth, columns = prediction. Labels >= C are ignored."""
    gt = torch.as_tensor(np.asarray(gt) if not torch.is_tensor(gt) else gt).reshape(-1).long()
    pred = torch.as_tensor(np.asarray(pred) if not torch.is_tensor(pred) else pred).reshape(-1).long()
    keep = (gt < num_classes) & (gt >= 0)
    idx = gt[keep] * num_classes + pred[keep]
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes).numpy()


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)


def mean_iou(cm: np.ndarray) -> float:
    iou = iou_per_class(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def confusion_from_probs(probs, masks, num_classes: int) -> np.ndarray:
    """Confusion matrix of the labels of ``probs`` (each (C, h, w), numpy or tensor) - upsampled to
    its mask's resolution and arg-maxed by :func:`~workbench.inference.postprocess.probs_to_labels`,
    as inference labels - against the class-index ``masks`` (each (H, W))."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for p, gt in zip(probs, masks):
        cm += confusion_matrix(gt, probs_to_labels(p, gt.shape), num_classes)
    return cm
