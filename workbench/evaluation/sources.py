"""Where analysis gets its (image, ground truth, prediction) triples from.

- :class:`FolderSource`: a folder of predicted masks against a folder of ground-truth masks (both
  hold class *values*, matched by file stem), with an optional folder of photos.
- :class:`OOFSource`: the out-of-fold probabilities of a training run (``runs/<name>/fold<k>/``,
  one or several folds) against the dataset's masks. Probabilities at the training size S are
  labelled as inference labels them (:func:`~workbench.inference.postprocess.probs_to_labels`:
  bilinear upsampling to each mask's size, arg-max), flip TTA is the mean of the plain and mirrored
  views (:func:`~workbench.inference.tta.merge_views`), and the mirrored prediction comes along for
  the flip-consistency score.

Files are read by :mod:`workbench.data.imageio` (the readers and file types of training and
inference). Both sources hand out :class:`Item` objects holding class-*index* maps (255 = value
outside the schema).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.schema import SCHEMA_FILE, ClassSchema, load_schema
from ..data.imageio import IMAGE_EXTS, MASK_EXTS, files_by_stem, read_image, read_mask
from ..data.resize import resize_labels, resize_rgb
from ..exceptions import AnalysisError, ImageReadError, SchemaError, UnreadablePredictionError
from ..inference.postprocess import probs_to_labels
from ..inference.tta import merge_views
from ..training.oof import OOF, has_oof, load_oof


@dataclass
class Item:
    stem: str
    image: np.ndarray | None      # (H, W, 3) uint8 RGB at the mask's size, None without a photo
    gt: np.ndarray                # (H, W) uint8 class indices, 255 = not in schema
    pred: np.ndarray              # (H, W) uint8 class indices
    pred_flip: np.ndarray | None = None   # prediction of the mirrored image, un-flipped and relabelled
    pred_plain: np.ndarray | None = None  # prediction of the image alone when ``pred`` is flip-TTA

    @property
    def flip_pair(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(prediction of the image, prediction of its mirror) for the flip-consistency score."""
        if self.pred_flip is None:
            return None
        return (self.pred if self.pred_plain is None else self.pred_plain), self.pred_flip


# ------------------------------------------------------------------------------------------- reading

def load_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a photo (:func:`workbench.data.imageio.read_image`)."""
    try:
        return read_image(path).image
    except (ImageReadError, OSError) as err:
        raise AnalysisError(f"cannot read image {path}: {err}") from err


def load_mask(path: str | Path, schema: ClassSchema, strict: bool) -> np.ndarray:
    """(H, W) uint8 class indices of a mask file (:func:`workbench.data.imageio.read_mask`), 255 for
    values outside the schema; ``strict`` (a prediction): such values are an error, and a file that
    does not decode is an :class:`UnreadablePredictionError` (counted and skipped by the evaluation)."""
    try:
        return schema.to_indices(read_mask(path), strict=strict)
    except (ImageReadError, OSError) as err:
        raise (UnreadablePredictionError if strict else AnalysisError)(f"cannot read mask {path}: {err}") from err
    except SchemaError as err:
        raise AnalysisError(f"{path}: {err}; pass the right --schema/--data") from err


def resolve_schema(schema: str | Path | None = None, data: str | Path | None = None,
                   masks: str | Path | None = None) -> ClassSchema:
    """The schema named by ``--schema`` (a classes.json or a folder holding one), else the dataset
    folder's, else the masks folder's parent's, else the default five-class schema."""
    if schema is not None:
        p = Path(schema)
        if p.is_file():
            return load_schema(p.parent) if p.name == SCHEMA_FILE else _schema_from_file(p)
        if not p.is_dir():
            raise FileNotFoundError(f"--schema {p}: no such file or folder")
        if not (p / SCHEMA_FILE).is_file():
            raise FileNotFoundError(f"--schema {p}: no {SCHEMA_FILE} in that folder")
        return load_schema(p)
    if data is not None:
        return load_schema(data)
    if masks is not None:
        parent = Path(masks).resolve().parent
        if (parent / SCHEMA_FILE).is_file():
            return load_schema(parent)
        return load_schema(masks)
    return load_schema(Path("/nonexistent"))


def _schema_from_file(path: Path) -> ClassSchema:
    try:
        return ClassSchema.from_dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, ValueError) as err:
        raise AnalysisError(f"{path}: cannot read class schema: {err}") from err


def _image_at(path: Path | None, shape: tuple[int, int]) -> np.ndarray | None:
    return None if path is None else resize_rgb(load_image(path), shape)


# ------------------------------------------------------------------------------------------- sources

class FolderSource:
    """Predicted masks (class values) in ``pred_dir`` against ground truth in ``gt_dir``."""

    has_flip = False

    def __init__(self, pred_dir: str | Path, gt_dir: str | Path, images_dir: str | Path | None,
                 schema: ClassSchema, name: str | None = None):
        self.pred_dir, self.gt_dir = Path(pred_dir), Path(gt_dir)
        self.images_dir = Path(images_dir) if images_dir else None
        self.schema = schema
        self.name = name or self.pred_dir.name
        self._pred = files_by_stem(self.pred_dir, MASK_EXTS)
        self._gt = files_by_stem(self.gt_dir, MASK_EXTS)
        self._img = files_by_stem(self.images_dir, IMAGE_EXTS)
        self.stems = sorted(set(self._pred) & set(self._gt))
        if not self.stems:
            raise AnalysisError(f"no predicted mask in {self.pred_dir} has a ground-truth mask of the same "
                             f"name in {self.gt_dir} ({len(self._pred)} predictions, {len(self._gt)} masks)")
        self.missing_pred = sorted(set(self._gt) - set(self._pred))
        self.missing_gt = sorted(set(self._pred) - set(self._gt))
        self.missing_images = [s for s in self.stems if s not in self._img] if self.images_dir else []
        self._warned_size = False

    def describe(self) -> dict:
        return {"predictions": str(self.pred_dir), "ground truth": str(self.gt_dir),
                "images": str(self.images_dir) if self.images_dir else "(none)"}

    def image(self, stem: str) -> np.ndarray | None:
        """The photo at its own size (None without one)."""
        path = self._img.get(stem)
        return None if path is None else load_image(path)

    @property
    def expected(self) -> int:
        """How many images should have a prediction: those with a ground-truth mask."""
        return len(self._gt)

    def get(self, stem: str) -> Item:
        """The triple of ``stem``; :class:`UnreadablePredictionError` if its predicted mask does not
        decode (the evaluation counts and skips those), :class:`AnalysisError` for other problems."""
        gt_path, pred_path = self._gt[stem], self._pred[stem]
        gt = load_mask(gt_path, self.schema, strict=False)
        pred = load_mask(pred_path, self.schema, strict=True)
        if pred.shape != gt.shape:
            if not self._warned_size:
                warnings.warn(f"{pred_path}: prediction {pred.shape} resized (nearest) to the ground "
                              f"truth's {gt.shape}; further size mismatches are resized silently", stacklevel=2)
                self._warned_size = True
            pred = resize_labels(pred, gt.shape)
        return Item(stem, _image_at(self._img.get(stem), gt.shape), gt, pred)


def discover_folds(run_dir: str | Path, folds: list[int] | None = None) -> list[Path]:
    """Fold folders with OOF predictions: ``run_dir`` itself if it is one, else ``run_dir/fold*/``."""
    run_dir = Path(run_dir)
    if has_oof(run_dir):
        return [run_dir]
    found = sorted((p for p in run_dir.glob("fold*") if p.is_dir() and has_oof(p)),
                   key=lambda p: (len(p.name), p.name))
    if folds is not None:
        found = [p for p in found if p.name[4:].isdigit() and int(p.name[4:]) in folds]
    if not found:
        raise FileNotFoundError(f"{run_dir}: no fold*/oof.json with out-of-fold probabilities "
                                "(train with OOF export, and wait until a fold has finished)")
    return found


class OOFSource:
    """Out-of-fold predictions of a training run against the dataset in ``data_dir``."""

    has_flip = True

    def __init__(self, run_dir: str | Path, data_dir: str | Path, folds: list[int] | None = None,
                 tta: bool = True, name: str | None = None, images_dir: str | Path | None = None,
                 gt_dir: str | Path | None = None):
        self.run_dir, self.data_dir = Path(run_dir), Path(data_dir)
        self.fold_dirs = discover_folds(self.run_dir, folds)
        self.oofs: list[OOF] = [load_oof(d) for d in self.fold_dirs]
        self.schema = self.oofs[0].schema
        for d, o in zip(self.fold_dirs, self.oofs):
            if o.schema != self.schema:
                raise AnalysisError(f"{d}: class schema differs from {self.fold_dirs[0]}'s")
        data_schema = load_schema(self.data_dir)
        if data_schema.values != self.schema.values:
            raise AnalysisError(f"{self.data_dir}: its classes.json does not match the run's schema "
                             f"(values {data_schema.values} vs {self.schema.values})")
        self.tta = tta
        self.name = name or self.run_dir.name
        self.gt_dir = Path(gt_dir) if gt_dir else self.data_dir / "masks"
        self.images_dir = Path(images_dir) if images_dir else self.data_dir / "images"
        self._gt = files_by_stem(self.gt_dir, MASK_EXTS)
        self._img = files_by_stem(self.images_dir, IMAGE_EXTS) if self.images_dir.is_dir() else {}
        self._where: dict[str, tuple[OOF, int]] = {}
        for o in self.oofs:
            for i, s in enumerate(o.stems):
                self._where.setdefault(s, (o, i))
        self.missing_gt = sorted(s for s in self._where if s not in self._gt)
        self.stems = sorted(s for s in self._where if s in self._gt)
        if not self.stems:
            raise AnalysisError(f"none of the run's OOF images has a mask in {self.gt_dir}")

    missing_pred: list[str] = []  # out-of-fold predictions exist for the run's folds only: none is "missing"

    @property
    def expected(self) -> int:
        return len(self.stems)

    def describe(self) -> dict:
        return {"run": str(self.run_dir), "folds": ", ".join(d.name for d in self.fold_dirs),
                "prediction": "flip-TTA (mean of image and mirror)" if self.tta else "plain (no TTA)",
                "training size": str(self.oofs[0].image_size), "dataset": str(self.data_dir)}

    def image(self, stem: str) -> np.ndarray | None:
        path = self._img.get(stem)
        return None if path is None else load_image(path)

    def mask(self, stem: str) -> np.ndarray:
        """(H, W) uint8 class indices of the ground truth of ``stem``."""
        return load_mask(self._gt[stem], self.schema, strict=False)

    def get(self, stem: str) -> Item:
        oof, i = self._where[stem]
        gt = self.mask(stem)
        plain, mirrored = oof.views(i)
        pred_plain, pred_mirror = probs_to_labels(plain, gt.shape), probs_to_labels(mirrored, gt.shape)
        pred = probs_to_labels(merge_views(plain, mirrored), gt.shape) if self.tta else pred_plain
        return Item(stem, _image_at(self._img.get(stem), gt.shape), gt, pred, pred_mirror, pred_plain)


def is_run_folder(path: str | Path) -> bool:
    path = Path(path)
    return has_oof(path) or any(has_oof(p) for p in path.glob("fold*") if p.is_dir())


def open_source(pred: str | Path, *, gt: str | Path | None = None, images: str | Path | None = None,
                data: str | Path | None = None, schema: ClassSchema | None = None, folds: list[int] | None = None,
                tta: bool = True, name: str | None = None):
    """A :class:`FolderSource` or, when ``pred`` is a training run (``oof.json`` in it or in its
    ``fold*/``), an :class:`OOFSource`. Ground truth and photos default to ``data``/masks and
    ``data``/images."""
    pred = Path(pred)
    if not pred.exists():
        raise FileNotFoundError(f"{pred}: no such folder")
    if images is None and data is not None and (Path(data) / "images").is_dir():
        images = Path(data) / "images"
    if gt is None and data is not None:
        gt = Path(data) / "masks"
    if is_run_folder(pred):
        if data is None and gt is None:
            raise AnalysisError(f"{pred} is a training run: pass --data DATASET (its images/ and masks/) "
                                "or --gt MASKS")
        return OOFSource(pred, data if data is not None else Path(gt).parent, folds=folds, tta=tta, name=name,
                         images_dir=images, gt_dir=gt)
    if gt is None:
        raise AnalysisError(f"{pred}: pass --gt MASKS (or --data DATASET) to compare the predictions against")
    schema = schema or resolve_schema(None, data, gt)
    return FolderSource(pred, gt, images, schema, name=name)
