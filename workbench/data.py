"""Datasets in the assignment's layout: ``images/*.jpg`` + ``masks/*.png`` (same stem), optional
``test_images/`` and ``classes.json``.

:func:`load_dataset` validates the *whole* dataset before anything trains and raises one
:class:`DatasetError` listing every bad file; the images it decodes on the way are resized once and
kept in RAM, so epochs never touch the disk again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from . import imageio
from .preprocess import resize_image
from .schema import ClassSchema, load_schema

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
MASK_EXTS = {".png"}


class DatasetError(ValueError):
    """A dataset that cannot be trained on; ``problems`` lists one line per bad file."""

    def __init__(self, data_dir, problems: list[str]):
        self.problems = problems
        head = f"dataset {data_dir} has {len(problems)} problem(s):"
        super().__init__("\n  - ".join([head, *problems]))


@dataclass
class Dataset:
    data_dir: Path
    schema: ClassSchema
    stems: list[str]
    images: np.ndarray        # (N, S, S, 3) uint8 RGB, squashed to the training size
    masks: np.ndarray         # (N, S, S) uint8 class indices at the training size (nearest)
    full_masks: list[np.ndarray]  # class indices at each mask's own resolution, for honest metrics

    def __len__(self) -> int:
        return len(self.stems)


def _files(folder: Path, exts: set[str]) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def read_rgb(path: Path) -> np.ndarray | None:
    """RGB uint8 decoded exactly as inference decodes it (EXIF orientation applied), or None."""
    try:
        return imageio.read_image(path).image
    except (imageio.ImageReadError, OSError):
        return None


def check_mask(path: Path, schema: ClassSchema) -> tuple[np.ndarray | None, str | None]:
    """(class-index mask, None) or (None, reason)."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        return None, f"{path}: unreadable or not an image"
    if raw.ndim != 2:
        return None, f"{path}: mask has {raw.shape[2]} channels, expected a single-channel PNG"
    if raw.dtype != np.uint8:
        return None, f"{path}: mask is {raw.dtype}, expected 8-bit"
    idx = schema.value_to_index[raw]
    if (idx == 255).any():
        bad = sorted(int(v) for v in np.unique(raw[idx == 255]))
        return None, f"{path}: mask values {bad[:10]} are not in the schema {list(schema.values)}"
    return idx, None


def scan_pairs(data_dir: Path) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """Matched (stem, image, mask) triples and problems with unmatched or misplaced files."""
    problems = []
    if not (data_dir / "images").is_dir():
        problems.append(f"{data_dir / 'images'}: folder missing")
    if not (data_dir / "masks").is_dir():
        problems.append(f"{data_dir / 'masks'}: folder missing")
    images, masks = _files(data_dir / "images", IMAGE_EXTS), _files(data_dir / "masks", MASK_EXTS)
    for stem in sorted(set(images) - set(masks)):
        problems.append(f"{images[stem]}: image without mask (expected masks/{stem}.png)")
    for stem in sorted(set(masks) - set(images)):
        problems.append(f"{masks[stem]}: mask without image")
    pairs = []
    for stem in sorted(set(images) & set(masks)):
        if images[stem].suffix.lower() not in IMAGE_EXTS:
            problems.append(f"{images[stem]}: not an image file type ({', '.join(sorted(IMAGE_EXTS))})")
        elif masks[stem].suffix.lower() not in MASK_EXTS:
            problems.append(f"{masks[stem]}: masks must be PNG")
        else:
            pairs.append((stem, images[stem], masks[stem]))
    if not pairs and not problems:
        problems.append(f"{data_dir}: no image/mask pairs found")
    return pairs, problems


def load_dataset(data_dir: str | Path, image_size: int, schema: ClassSchema | None = None) -> Dataset:
    """Validate every file of ``data_dir`` and return it decoded and resized in RAM."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(data_dir, [f"{data_dir}: dataset folder not found"])
    schema = schema or load_schema(data_dir)
    pairs, problems = scan_pairs(data_dir)
    stems, images, masks, full_masks = [], [], [], []
    for stem, img_path, mask_path in pairs:
        img = read_rgb(img_path)
        mask, why = check_mask(mask_path, schema)
        if img is None:
            problems.append(f"{img_path}: unreadable or not an image")
        if why:
            problems.append(why)
        if img is None or mask is None:
            continue
        if img.shape[:2] != mask.shape:
            problems.append(f"{mask_path}: size {mask.shape[1]}x{mask.shape[0]} differs from its image "
                            f"{img_path.name} {img.shape[1]}x{img.shape[0]}")
            continue
        stems.append(stem)
        images.append(resize_image(img, (image_size, image_size)))
        masks.append(cv2.resize(mask, (image_size, image_size), interpolation=cv2.INTER_NEAREST))
        full_masks.append(mask)
    if problems:
        raise DatasetError(data_dir, problems)
    return Dataset(data_dir, schema, stems, np.stack(images), np.stack(masks), full_masks)
