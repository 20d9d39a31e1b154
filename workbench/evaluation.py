"""One pass over a prediction source that gathers everything the analysis reports show.

Dataset-level confusion matrix and IoU (:mod:`workbench.metrics`), per-image mIoU and error-kind
shares, the boundary-vs-interior split of errors (:mod:`workbench.errors`) and the
flip-consistency score: how often the prediction of the mirrored image - un-flipped and with
left/right labels swapped by the schema's flip permutation - agrees with the prediction of the
image itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from . import errors as E
from .metrics import confusion_matrix, iou_per_class, mean_iou
from .schema import ClassSchema


# ------------------------------------------------------------------------------------ flip consistency

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


def unflip_labels(labels_of_mirror: np.ndarray, flip_perm: np.ndarray) -> np.ndarray:
    """Class-index map predicted on a mirrored image -> the original frame (mirror back, swap
    left/right labels). Arg-max commutes with the channel permutation, so this equals arg-max of
    :func:`workbench.tta.unflip_probs`."""
    perm = np.asarray(flip_perm)
    return perm[np.asarray(labels_of_mirror)[..., ::-1]]


def _labels(scores) -> np.ndarray:
    """(C, H, W) scores (numpy or torch; logits or probabilities) -> (H, W) arg-max."""
    if torch.is_tensor(scores):
        scores = scores.detach().float().cpu()
        if scores.ndim == 4:
            scores = scores[0]
        return scores.argmax(0).numpy()
    scores = np.asarray(scores)
    if scores.ndim == 4:
        scores = scores[0]
    return scores.argmax(0)


def flip_consistency(model_fn: Callable[[np.ndarray], np.ndarray | torch.Tensor], images: Iterable[np.ndarray],
                     flip_perm: np.ndarray, background: int = 0, counts: FlipCounts | None = None,
                     orientation: np.ndarray | None = None) -> float:
    """Share of pixels where the model's prediction of the mirrored image, un-flipped and
    label-permuted, equals its prediction of the image (1.0 for a perfectly flip-equivariant model).

    ``model_fn`` maps an (H, W, 3) uint8 RGB image to (C, h, w) class scores (logits or
    probabilities; a leading batch axis of 1 is accepted). Pass ``counts`` to also get the
    parts-only agreement, and ``orientation`` (:func:`workbench.errors.orientation_table`) to count
    orientation swaps.
    """
    counts = counts if counts is not None else FlipCounts()
    perm = np.asarray(flip_perm)
    for image in images:
        image = np.asarray(image)
        pred = _labels(model_fn(image))
        mirror = _labels(model_fn(np.ascontiguousarray(image[:, ::-1])))
        counts.add(pred, unflip_labels(mirror, perm), background, orientation)
    return counts.score


def model_scores_fn(model: torch.nn.Module, meta: dict, device: str | torch.device = "cpu"):
    """``model_fn`` for :func:`flip_consistency` from :func:`workbench.modelfile.load_model`'s result:
    squash to the model's input size, normalise, return logits (C, S, S)."""
    from .preprocess import resize_image, to_tensor

    size = meta["input_size"]
    size = (size, size) if isinstance(size, int) else tuple(size)

    @torch.inference_mode()
    def fn(image: np.ndarray) -> torch.Tensor:
        x = to_tensor(resize_image(image, size)[None], meta["normalization"], device=device)
        return model(x)[0]

    return fn


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
        }
        if self.flip is not None:
            d.update(flip_consistency=self.flip.score, flip_consistency_parts=self.flip.part_score,
                     flip_source=self.flip_source)
        return d


def evaluate(source, stems: list[str] | None = None, boundary_px: int = 3,
             progress: Callable[[Iterable], Iterable] | None = None) -> Evaluation:
    """Score every image of ``source`` (a :mod:`workbench.sources` source) once."""
    schema = source.schema
    c = schema.num_classes
    bg = E.background_index(schema)
    orient = E.orientation_table(schema)
    stems = list(source.stems if stems is None else stems)
    cm = np.zeros((c, c), dtype=np.int64)
    regions = E.RegionCounts()
    flip = FlipCounts() if getattr(source, "has_flip", False) else None
    results = []
    for stem in (progress(stems) if progress else stems):
        item = source.get(stem)
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
    if not results:
        raise ValueError("nothing to evaluate: no images")
    return Evaluation(source.name, schema, cm, results, regions, boundary_px, flip,
                      "out-of-fold probabilities (plain vs mirrored)" if flip is not None else "",
                      info=source.describe() if hasattr(source, "describe") else {})
