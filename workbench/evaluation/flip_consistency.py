"""Flip consistency: how often the prediction of a mirrored image - un-flipped, with left/right
labels swapped by the schema's flip permutation - agrees with the prediction of the image itself
(100 %: the model sees a mirrored car exactly as the same car; flip TTA can only help where they
disagree).

The two predictions come from a training run's OOF files (plain and mirrored views) or from a model
file run through :func:`workbench.inference.tta.flip_tta` on each image (:func:`model_flip_counts`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ..core.schema import ClassSchema
from ..data.resize import resize_rgb
from ..inference import tta
from ..inference.postprocess import probs_to_labels


@dataclass
class FlipCounts:
    """Pixel agreement between a prediction and its mirror's (un-flipped, relabelled)."""
    agree: int = 0
    total: int = 0
    part_agree: int = 0   # on pixels where either prediction is a part (background excluded)
    part_total: int = 0
    orientation_swaps: int = 0  # disagreements that are an orientation pair (left<->right, front<->rear)

    def add(self, pred: np.ndarray, pred_mirror: np.ndarray, background: int,
            orientation: np.ndarray | None = None) -> float:
        """Count one image; returns its agreement."""
        pred, pred_mirror = np.asarray(pred), np.asarray(pred_mirror)
        same = pred == pred_mirror
        part = (pred != background) | (pred_mirror != background)
        a, n = int(same.sum()), same.size
        self.agree += a
        self.total += n
        self.part_agree += int((same & part).sum())
        self.part_total += int(part.sum())
        if orientation is not None:
            c = orientation.shape[0]
            p, q = np.minimum(pred, c - 1), np.minimum(pred_mirror, c - 1)
            self.orientation_swaps += int(orientation[p, q].sum())
        return a / max(n, 1)

    @property
    def score(self) -> float:
        return self.agree / self.total if self.total else float("nan")

    @property
    def part_score(self) -> float:
        return self.part_agree / self.part_total if self.part_total else float("nan")

    @property
    def orientation_share(self) -> float:
        """Share of disagreeing pixels that are orientation swaps."""
        d = self.total - self.agree
        return self.orientation_swaps / d if d else float("nan")


def model_flip_counts(model: torch.nn.Module, meta: dict, images: Iterable[np.ndarray], device="cpu",
                      counts: FlipCounts | None = None, background: int = 0,
                      orientation: np.ndarray | None = None) -> FlipCounts:
    """Flip consistency of a model (as :func:`workbench.models.modelfile.load_model` returns it, with
    its metadata) on (H, W, 3) uint8 RGB ``images``, at the model's input size: each image is squashed
    to it and run with :func:`~workbench.inference.tta.flip_tta` (flip permutation of the model's own
    schema); the labels of the plain view are compared with those of the mirrored view. ``orientation``
    (:func:`workbench.evaluation.error_kinds.orientation_table`) also counts orientation swaps."""
    counts = counts if counts is not None else FlipCounts()
    size = tuple(int(v) for v in meta["input_size"])
    perm = ClassSchema.from_dict(meta["schema"]).flip_permutation
    for image in images:
        views = tta.predict_arrays(model, resize_rgb(np.asarray(image), size)[None], meta["normalization"], device,
                                   flip_perm=perm, parts=True)
        counts.add(probs_to_labels(views.plain[0], size), probs_to_labels(views.mirrored[0], size), background,
                   orientation)
    return counts
