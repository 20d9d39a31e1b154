"""Held-out photos at a smaller size: how a model's score depends on the resolution of the photo.

The DSMLR training photos are all 512x512 (squashed originals), so out-of-fold scores say nothing
about small photos; the test photos keep their own sizes (229-1600 px wide). The product squashes
every photo to the model's input size, so a photo smaller than that is *enlarged*, and its thin
parts (mirrors, lights, handles) carry less detail than in any training photo.

:class:`ShrunkSource` re-creates such photos from held-out ones: each photo and its mask are
shrunk so that the longer side is ``size`` pixels (area filter for the photo, nearest neighbour for
the mask: :mod:`workbench.data.resize`, as everywhere), the photo is predicted through the
product's :class:`~workbench.inference.predictor.Predictor` with the fold's own model file (flip TTA
and cleanup as that file says) and scored at that size, as a labelled test photo of that size
would be. A photo is never enlarged: at a size above its own it is scored as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..data.resize import resize_labels, resize_rgb
from ..exceptions import AnalysisError
from .sources import Item, OOFSource, discover_folds


def shrunk_shape(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """(height, width) with the longer side ``size`` and the aspect ratio kept (rounded, at least
    1 px); ``shape`` itself when it is not larger than ``size``."""
    h, w = shape
    scale = size / max(h, w)
    if scale >= 1:
        return h, w
    return max(1, round(h * scale)), max(1, round(w * scale))


def default_predictor(model_file: Path, device: str):
    from ..inference.predictor import Predictor
    return Predictor(model_file, device=device)


class ShrunkSource:
    """The held-out photos of a run's folds shrunk to ``size`` px (longer side), each predicted by
    its own fold's ``model.safetensors``; an analysis source (``stems``, ``schema``, ``get``) for
    :func:`~workbench.evaluation.oof_table.score_source`.

    ``make_predictor(model_file, device)`` builds a predictor (default: the inference Predictor);
    anything with ``predict_labels(image, size)`` and ``schema`` will do."""

    has_flip = False

    def __init__(self, run_dir: str | Path, data_dir: str | Path, size: int, folds: list[int] | None = None,
                 device: str = "cpu", make_predictor: Callable = default_predictor):
        if size < 1:
            raise AnalysisError(f"size must be a positive number of pixels, got {size}")
        self.size = int(size)
        self.name = f"{Path(run_dir).name} at {size} px"
        self._where: dict[str, tuple[OOFSource, object]] = {}
        self.schema = None
        for fold_dir in discover_folds(run_dir, folds):
            model_file = fold_dir / "model.safetensors"
            if not model_file.exists():
                raise AnalysisError(f"{fold_dir}: no model.safetensors (has this fold finished training?)")
            held_out = OOFSource(fold_dir, data_dir)
            predictor = make_predictor(model_file, device)
            if predictor.schema.values != held_out.schema.values:
                raise AnalysisError(f"{model_file}: its class schema differs from the fold's out-of-fold data")
            self.schema = self.schema or held_out.schema
            for stem in held_out.stems:
                self._where[stem] = (held_out, predictor)
        self.stems = sorted(self._where)
        # the table says "flip TTA" only if every fold's model file asks for it
        self.tta = bool(self._where) and all(getattr(p, "hflip", False) for _, p in self._where.values())

    @property
    def expected(self) -> int:
        return len(self.stems)

    def get(self, stem: str) -> Item:
        held_out, predictor = self._where[stem]
        gt = held_out.mask(stem)
        image = held_out.image(stem)
        if image is None:
            raise AnalysisError(f"{stem}: no photo in {held_out.images_dir}")
        shape = shrunk_shape(gt.shape, self.size)
        small = resize_rgb(image, shape)  # straight to the mask's shrunk shape, even if photo and mask sizes differ
        return Item(stem, small, resize_labels(gt, shape), predictor.predict_labels(small, shape))
