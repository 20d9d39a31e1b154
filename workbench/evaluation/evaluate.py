"""One pass over a prediction source that gathers everything the analysis reports show.

Dataset-level confusion matrix and IoU (:mod:`workbench.evaluation.metrics`), per-image mIoU and
error-kind shares, the boundary-vs-interior split of errors (:mod:`workbench.evaluation.error_kinds`)
and, when the source has mirror predictions, the flip consistency
(:mod:`workbench.evaluation.flip_consistency`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from ..core.console import listing
from ..core.schema import ClassSchema
from ..exceptions import AnalysisError, UnreadablePredictionError
from . import error_kinds as E
from .flip_consistency import FlipCounts
from .metrics import confusion_matrix, iou_per_class, mean_iou


# ------------------------------------------------------------------------------------------ evaluation

@dataclass
class ImageResult:
    stem: str
    miou: float
    pixel_acc: float
    kinds: np.ndarray            # pixel count per error kind (CORRECT, MISSED, FALSE_PART, CONFUSION, ORIENTATION)
    flip_agree: float | None = None


@dataclass
class Evaluation:
    name: str
    schema: ClassSchema
    cm: np.ndarray
    images: list[ImageResult]
    regions: E.RegionCounts
    boundary_px: int
    flip: FlipCounts | None = None
    flip_source: str = ""
    info: dict = field(default_factory=dict)
    expected: int = 0                                       # images that should have a prediction
    missing: list[str] = field(default_factory=list)        # ... and have none
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (stem, reason): prediction does not decode
    unmatched: list[str] = field(default_factory=list)      # predictions without a ground-truth mask

    def coverage(self) -> str | None:
        """One sentence on what was not scored (missing or unreadable predictions, predictions
        without ground truth), or None when every expected image was scored."""
        if not (self.missing or self.unreadable or self.unmatched):
            return None
        n = self.expected or len(self.images) + len(self.missing) + len(self.unreadable)
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} of {n} images have no prediction ({listing(self.missing)})")
        if self.unreadable:
            parts.append(f"{len(self.unreadable)} of {n} predictions are unreadable ("
                         + listing([f"{s}: {why}" for s, why in self.unreadable], 3) + ")")
        if self.unmatched:
            parts.append(f"{len(self.unmatched)} prediction(s) have no ground-truth mask and were ignored "
                         f"({listing(self.unmatched)})")
        return f"{self.name}: scored {len(self.images)} of {n} images; " + "; ".join(parts)

    @property
    def iou(self) -> np.ndarray:
        return iou_per_class(self.cm)

    @property
    def miou(self) -> float:
        return mean_iou(self.cm)

    @property
    def pixel_acc(self) -> float:
        n = self.cm.sum()
        return float(np.trace(self.cm) / n) if n else float("nan")

    @property
    def mean_image_miou(self) -> float:
        v = [r.miou for r in self.images if math.isfinite(r.miou)]
        return float(np.mean(v)) if v else float("nan")

    def by_stem(self) -> dict[str, ImageResult]:
        return {r.stem: r for r in self.images}

    def worst(self, k: int) -> list[ImageResult]:
        """The ``k`` images with the lowest per-image mIoU."""
        return sorted(self.images, key=lambda r: (not math.isfinite(r.miou), r.miou))[:k]

    def kind_totals(self) -> np.ndarray:
        return self.regions.kind_totals()

    def top_confusions(self, k: int = 10) -> list[tuple[int, int, int, float, bool]]:
        """Largest off-diagonal cells: (gt index, pred index, pixels, share of the gt row, is orientation)."""
        cm = self.cm.astype(np.float64)
        rows = cm.sum(1, keepdims=True)
        off = cm.copy()
        np.fill_diagonal(off, 0)
        orient = E.orientation_table(self.schema)
        cells = [(int(i), int(j)) for i, j in zip(*np.nonzero(off))]
        cells.sort(key=lambda ij: -off[ij])
        return [(i, j, int(off[i, j]), float(off[i, j] / rows[i, 0]), bool(orient[i, j])) for i, j in cells[:k]]

    def summary(self) -> dict:
        t = self.kind_totals()
        n = max(int(t.sum()), 1)
        d = {
            "name": self.name, "images": len(self.images), "miou": self.miou,
            "mean_image_miou": self.mean_image_miou, "pixel_acc": self.pixel_acc,
            "boundary_px": self.boundary_px,
            "boundary_pixel_share": self.regions.boundary_pixel_share,
            "boundary_error_share": self.regions.boundary_error_share,
            "boundary_error_rate": self.regions.boundary_error_rate,
            "interior_error_rate": self.regions.interior_error_rate,
            "error_share_of_pixels": {E.ERROR_NAMES[k]: float(t[k] / n) for k in E.ERROR_KINDS},
            "error_share_of_errors": {E.ERROR_NAMES[k]: float(t[k] / max(int(t[1:].sum()), 1))
                                      for k in E.ERROR_KINDS},
            "per_class_iou": {nm: (None if not math.isfinite(v) else float(v))
                              for nm, v in zip(self.schema.names, self.iou)},
            "images_expected": self.expected, "missing_predictions": self.missing,
            "unreadable_predictions": [{"stem": s, "reason": why} for s, why in self.unreadable],
            "predictions_without_ground_truth": self.unmatched,
        }
        if self.flip is not None:
            d.update(flip_consistency=self.flip.score, flip_consistency_parts=self.flip.part_score,
                     flip_source=self.flip_source)
        return d


def evaluate(source, stems: list[str] | None = None, boundary_px: int = 3,
             progress: Callable[[Iterable], Iterable] | None = None) -> Evaluation:
    """Score every image of ``source`` (a :mod:`workbench.evaluation.sources` source) once."""
    schema = source.schema
    c = schema.num_classes
    bg = E.background_index(schema)
    orient = E.orientation_table(schema)
    stems = list(source.stems if stems is None else stems)
    cm = np.zeros((c, c), dtype=np.int64)
    regions = E.RegionCounts()
    flip = FlipCounts() if getattr(source, "has_flip", False) else None
    results, unreadable = [], []
    for stem in (progress(stems) if progress else stems):
        try:
            item = source.get(stem)
        except UnreadablePredictionError as err:  # counted and reported, the other images are scored
            unreadable.append((stem, str(err)))
            continue
        icm = confusion_matrix(item.gt, item.pred, c)
        cm += icm
        kinds = E.classify_errors(item.gt, item.pred, schema)
        regions.add(kinds, E.boundary_band(item.gt, boundary_px))
        k = kinds[kinds != E.IGNORED]
        counts = np.bincount(k, minlength=5)[:5]
        n = int(icm.sum())
        fa = None
        pair = item.flip_pair
        if flip is not None and pair is not None:
            fa = flip.add(pair[0], pair[1], bg, orient)
        results.append(ImageResult(stem, mean_iou(icm), float(np.trace(icm) / n) if n else float("nan"), counts, fa))
    missing, unmatched = list(getattr(source, "missing_pred", [])), list(getattr(source, "missing_gt", []))
    expected = getattr(source, "expected", len(stems) + len(missing))
    if not results:
        why = f" ({len(unreadable)} unreadable: {listing([s for s, _ in unreadable])})" if unreadable else ""
        raise AnalysisError(f"nothing to evaluate in {source.name}: no readable prediction{why}")
    info = source.describe() if hasattr(source, "describe") else {}
    if missing or unreadable:
        info["scored"] = (f"{len(results)} of {expected} images ({len(missing)} without prediction, "
                          f"{len(unreadable)} unreadable)")
    return Evaluation(source.name, schema, cm, results, regions, boundary_px, flip,
                      "out-of-fold probabilities (plain vs mirrored)" if flip is not None else "",
                      info=info, expected=expected, missing=missing, unreadable=unreadable, unmatched=unmatched)

