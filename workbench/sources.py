"""Where analysis gets its (image, ground truth, prediction) triples from.

- :class:`FolderSource`: a folder of predicted masks against a folder of ground-truth masks (both
  hold class *values*, matched by file stem), with an optional folder of photos.
- :class:`OOFSource`: the out-of-fold probabilities of a training run (``runs/<name>/fold<k>/``,
  one or several folds) against the dataset's masks. Probabilities at the training size S are
  upsampled bilinearly to each mask's size and then arg-maxed, as inference does. The mirrored
  prediction (``oof_probs_flip``) comes along for the flip-consistency score.

Both hand out :class:`Item` objects holding class-*index* maps (255 = value outside the schema).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from . import imageio
from .oof import OOF, has_oof, load_oof
from .schema import SCHEMA_FILE, ClassSchema, load_schema

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MASK_EXTS = (".png", ".bmp", ".tif", ".tiff")


class AnalysisError(ValueError):
    """Inputs that cannot be analysed (no matching files, wrong schema, ...); the message says why."""


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

def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB, decoded exactly as inference decodes it (:mod:`workbench.imageio`)."""
    try:
        return imageio.read_image(path).image
    except (imageio.ImageReadError, OSError) as err:
        raise AnalysisError(f"cannot read image {path}: {err}") from err


def read_mask(path: str | Path) -> np.ndarray:
    """(H, W) uint8 mask of class values."""
    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise AnalysisError(f"cannot read mask {path}")
    if m.ndim == 3:  # an RGB-saved grey mask: all channels equal
        m = m[..., 0]
    if m.dtype != np.uint8:
        if m.max() > 255:
            raise AnalysisError(f"{path}: mask values above 255; masks must hold 8-bit class values")
        m = m.astype(np.uint8)
    return m


def index_files(folder: str | Path | None, exts: tuple[str, ...]) -> dict[str, Path]:
    """stem -> file for the files of ``folder`` with one of ``exts`` (first extension wins)."""
    if folder is None:
        return {}
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder: {folder}")
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in exts and not p.name.startswith("."):
            prev = out.get(p.stem)
            if prev is None or exts.index(p.suffix.lower()) < exts.index(prev.suffix.lower()):
                out[p.stem] = p
    return out


def to_indices(mask: np.ndarray, schema: ClassSchema, path: str | Path, strict: bool) -> np.ndarray:
    idx = schema.value_to_index[mask]
    if strict and (idx == 255).any():
        bad = sorted(set(np.unique(mask[idx == 255]).tolist()))
        raise AnalysisError(f"{path}: mask values {bad[:10]} are not classes of the schema "
                         f"({dict(zip(schema.values, schema.names))}); pass the right --schema/--data")
    return idx


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
    import json
    try:
        return ClassSchema.from_dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, ValueError) as err:
        raise AnalysisError(f"{path}: cannot read class schema: {err}") from err


def _fit(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if labels.shape == shape:
        return labels
    return cv2.resize(labels, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def _image_at(path: Path | None, shape: tuple[int, int]) -> np.ndarray | None:
    if path is None:
        return None
    img = read_image(path)
    if img.shape[:2] != shape:
        shrink = img.shape[0] > shape[0] or img.shape[1] > shape[1]
        img = cv2.resize(img, (shape[1], shape[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return img


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
        self._pred = index_files(self.pred_dir, MASK_EXTS)
        self._gt = index_files(self.gt_dir, MASK_EXTS)
        self._img = index_files(self.images_dir, IMAGE_EXTS)
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
        return None if path is None else read_image(path)

    def get(self, stem: str) -> Item:
        gt_path, pred_path = self._gt[stem], self._pred[stem]
        gt = to_indices(read_mask(gt_path), self.schema, gt_path, strict=False)
        pred = to_indices(read_mask(pred_path), self.schema, pred_path, strict=True)
        if pred.shape != gt.shape:
            if not self._warned_size:
                warnings.warn(f"{pred_path}: prediction {pred.shape} resized (nearest) to the ground "
                              f"truth's {gt.shape}; further size mismatches are resized silently", stacklevel=2)
                self._warned_size = True
            pred = _fit(pred, gt.shape)
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


def upsample_probs(probs: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """(C, S, S) probabilities (any float / uint8 scale) -> float32 (C, H, W), bilinear as inference."""
    t = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32))[None]
    if tuple(t.shape[-2:]) != tuple(shape):
        t = F.interpolate(t, size=tuple(shape), mode="bilinear", align_corners=False)
    return t[0]


def probs_to_labels(probs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(C, S, S) probabilities -> (H, W) uint8 arg-max after bilinear upsampling to ``shape``."""
    return labels_of(upsample_probs(probs, shape))


def labels_of(probs: torch.Tensor) -> np.ndarray:
    """(C, H, W) -> (H, W) uint8 arg-max (first maximum on ties, like torch.argmax; numpy's
    reduction over the leading axis is several times faster on CPU)."""
    return probs.numpy().argmax(0).astype(np.uint8)


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
        self._gt = index_files(self.gt_dir, MASK_EXTS)
        self._img = index_files(self.images_dir, IMAGE_EXTS) if self.images_dir.is_dir() else {}
        self._where: dict[str, tuple[OOF, int]] = {}
        for o in self.oofs:
            for i, s in enumerate(o.stems):
                self._where.setdefault(s, (o, i))
        self.missing_gt = sorted(s for s in self._where if s not in self._gt)
        self.stems = sorted(s for s in self._where if s in self._gt)
        if not self.stems:
            raise AnalysisError(f"none of the run's OOF images has a mask in {self.gt_dir}")

    def describe(self) -> dict:
        return {"run": str(self.run_dir), "folds": ", ".join(d.name for d in self.fold_dirs),
                "prediction": "flip-TTA (mean of image and mirror)" if self.tta else "plain (no TTA)",
                "training size": str(self.oofs[0].image_size), "dataset": str(self.data_dir)}

    def image(self, stem: str) -> np.ndarray | None:
        path = self._img.get(stem)
        return None if path is None else read_image(path)

    def get(self, stem: str) -> Item:
        oof, i = self._where[stem]
        gt_path = self._gt[stem]
        gt = to_indices(read_mask(gt_path), self.schema, gt_path, strict=False)
        plain = upsample_probs(oof.probs[i], gt.shape)
        mirror = upsample_probs(oof.probs_flip[i], gt.shape)
        pred_plain, pred_mirror = labels_of(plain), labels_of(mirror)
        # bilinear upsampling is linear: upsample(a) + upsample(b) == upsample(a + b)
        pred = labels_of(plain.add_(mirror)) if self.tta else pred_plain
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
