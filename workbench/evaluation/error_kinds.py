"""Per-pixel error types of a segmentation against its ground truth, and where errors sit.

Every pixel of a (ground truth, prediction) pair of class-index maps falls in one kind:

- ``CORRECT``      prediction equals ground truth (background or part);
- ``MISSED``       ground truth is a part, prediction is background (under-segmentation);
- ``FALSE_PART``   ground truth is background, prediction is a part (hallucinated part);
- ``CONFUSION``    both are parts, but different ones (e.g. hood predicted as front_bumper);
- ``ORIENTATION``  both are parts that differ only by orientation - a left/right or front/rear pair
                   of ``ClassSchema.orientation_pairs()`` (e.g. front_left_door as front_right_door);
- ``IGNORED``      ground-truth value outside the schema (e.g. 255): not scored.

The boundary band (pixels within a few pixels of a ground-truth edge) separates errors a sharper
decoder or higher resolution could fix from errors of recognition.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ..core.schema import ClassSchema

CORRECT, MISSED, FALSE_PART, CONFUSION, ORIENTATION = 0, 1, 2, 3, 4
IGNORED = 255
ERROR_KINDS = (MISSED, FALSE_PART, CONFUSION, ORIENTATION)

ERROR_NAMES = {
    CORRECT: "correct",
    MISSED: "missed part",
    FALSE_PART: "false part",
    CONFUSION: "part confusion",
    ORIENTATION: "orientation swap",
}
ERROR_HELP = {
    MISSED: "GT part, predicted background",
    FALSE_PART: "GT background, predicted part",
    CONFUSION: "GT part, predicted another part",
    ORIENTATION: "left/right or front/rear mix-up",
}
# RGB. Saturated and far apart from each other; drawn over a dimmed grey image.
ERROR_COLOURS = {
    CORRECT: (92, 160, 110),       # muted green, drawn faintly on correct *part* pixels only
    MISSED: (255, 72, 56),         # red
    FALSE_PART: (40, 150, 255),    # blue
    CONFUSION: (255, 196, 0),      # amber
    ORIENTATION: (236, 64, 236),   # magenta
    IGNORED: (70, 70, 70),
}


def background_index(schema: ClassSchema) -> int:
    """Index of the background class: the class named ``background``, else the one with value 0,
    else index 0."""
    for i, n in enumerate(schema.names):
        if n.lower() in ("background", "_background_", "bg"):
            return i
    if 0 in schema.values:
        return schema.values.index(0)
    return 0


def orientation_table(schema: ClassSchema) -> np.ndarray:
    """(C, C) bool table: True where the two classes differ only by orientation."""
    c = schema.num_classes
    table = np.zeros((c, c), dtype=bool)
    for a, b in schema.orientation_pairs():
        table[a, b] = table[b, a] = True
    return table


def classify_errors(gt: np.ndarray, pred: np.ndarray, schema: ClassSchema) -> np.ndarray:
    """uint8 map of error kinds (see module docstring) for class-index maps ``gt`` and ``pred``.

    ``gt`` entries >= C (255 from ``value_to_index`` for unknown values) become ``IGNORED``.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    c = schema.num_classes
    bg = background_index(schema)
    valid = gt < c
    g = np.where(valid, gt, bg).astype(np.intp)
    p = np.clip(pred, 0, c - 1).astype(np.intp)
    kinds = np.full(gt.shape, CONFUSION, dtype=np.uint8)
    g_bg, p_bg = g == bg, p == bg
    kinds[g_bg & ~p_bg] = FALSE_PART
    kinds[~g_bg & p_bg] = MISSED
    kinds[orientation_table(schema)[g, p]] = ORIENTATION
    kinds[g == p] = CORRECT
    kinds[~valid] = IGNORED
    return kinds


def edge_map(gt: np.ndarray) -> np.ndarray:
    """bool map of pixels whose 4-neighbourhood holds another ground-truth label (both sides of
    every class boundary; the image border is not an edge)."""
    gt = np.asarray(gt)
    edge = np.zeros(gt.shape, dtype=bool)
    dy = gt[1:, :] != gt[:-1, :]
    dx = gt[:, 1:] != gt[:, :-1]
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    return edge


def boundary_band(gt: np.ndarray, width: int) -> np.ndarray:
    """bool map of pixels within ``width`` px (Euclidean) of a ground-truth class edge."""
    edge = edge_map(gt)
    if width <= 0 or not edge.any():
        return edge
    dist = cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2, 3)
    return dist <= width


@dataclass
class RegionCounts:
    """Pixel counts of each error kind inside the boundary band and in the interior."""
    boundary: np.ndarray = field(default_factory=lambda: np.zeros(5, dtype=np.int64))
    interior: np.ndarray = field(default_factory=lambda: np.zeros(5, dtype=np.int64))

    def add(self, kinds: np.ndarray, band: np.ndarray) -> None:
        for region, where in ((self.boundary, band), (self.interior, ~band)):
            k = kinds[where]
            region += np.bincount(k[k != IGNORED], minlength=5)[:5]

    def __iadd__(self, other: "RegionCounts") -> "RegionCounts":
        self.boundary += other.boundary
        self.interior += other.interior
        return self

    @staticmethod
    def _rate(counts: np.ndarray) -> float:
        n = counts.sum()
        return float(counts[1:].sum() / n) if n else float("nan")

    @property
    def boundary_error_rate(self) -> float:
        """Share of boundary-band pixels that are wrong."""
        return self._rate(self.boundary)

    @property
    def interior_error_rate(self) -> float:
        return self._rate(self.interior)

    @property
    def boundary_pixel_share(self) -> float:
        """Share of all scored pixels that lie in the boundary band."""
        n = self.boundary.sum() + self.interior.sum()
        return float(self.boundary.sum() / n) if n else float("nan")

    @property
    def boundary_error_share(self) -> float:
        """Share of all wrong pixels that lie in the boundary band."""
        e = self.boundary[1:].sum() + self.interior[1:].sum()
        return float(self.boundary[1:].sum() / e) if e else float("nan")

    def kind_totals(self) -> np.ndarray:
        return self.boundary + self.interior


def region_counts(kinds: np.ndarray, gt: np.ndarray, width: int) -> RegionCounts:
    rc = RegionCounts()
    rc.add(kinds, boundary_band(gt, width))
    return rc


def error_kind_shares(kinds: np.ndarray) -> dict[int, float]:
    """Share of scored pixels of each error kind (``CORRECT`` included)."""
    k = kinds[kinds != IGNORED]
    n = max(k.size, 1)
    counts = np.bincount(k, minlength=5)
    return {kind: float(counts[kind] / n) for kind in (CORRECT, *ERROR_KINDS)}
