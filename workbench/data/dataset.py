"""Datasets in the assignment's layout: ``images/*.jpg`` + ``masks/*.png`` (same stem), optional
``test_images/`` and ``classes.json``.

:func:`load_dataset` validates the *whole* dataset before anything trains and raises one
:class:`DatasetError` listing every bad file; the images it decodes on the way are resized once and
kept in RAM, so epochs never touch the disk again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.schema import ClassSchema, load_schema
from ..exceptions import DatasetError, ImageReadError, SchemaError
from .imageio import IMAGE_EXTS, MASK_EXTS, read_image, read_mask
from .resize import resize_labels, resize_rgb


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


def _files(folder: Path) -> tuple[dict[str, Path], list[list[Path]]]:
    """stem -> file for every non-hidden file of ``folder`` (whatever its type, so that stray files
    are reported rather than ignored), and the groups of files that share a stem (``train1.jpg`` and
    ``train1.png``): which of them belongs to ``masks/train1.png`` cannot be guessed, so none is used."""
    if not folder.is_dir():
        return {}, []
    by_stem: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            by_stem.setdefault(p.stem, []).append(p)
    return ({stem: paths[0] for stem, paths in by_stem.items() if len(paths) == 1},
            [paths for paths in by_stem.values() if len(paths) > 1])


def read_pair(img_path: Path, mask_path: Path, schema: ClassSchema) -> tuple[np.ndarray | None, np.ndarray | None,
                                                                               list[str]]:
    """(RGB image, class-index mask, problems) of one training pair; None for a part that failed."""
    problems, img, mask = [], None, None
    try:
        img = read_image(img_path).image
    except (ImageReadError, OSError) as err:
        problems.append(f"{img_path}: unreadable or not an image ({err})")
    try:
        mask = schema.to_indices(read_mask(mask_path), strict=True)
    except (ImageReadError, SchemaError, OSError) as err:
        problems.append(f"{mask_path}: {err}")
    return img, mask, problems


def scan_pairs(data_dir: Path) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """Matched (stem, image, mask) triples and problems with unmatched or misplaced files."""
    problems = []
    if not (data_dir / "images").is_dir():
        problems.append(f"{data_dir / 'images'}: folder missing")
    if not (data_dir / "masks").is_dir():
        problems.append(f"{data_dir / 'masks'}: folder missing")
    (images, image_clashes), (masks, mask_clashes) = _files(data_dir / "images"), _files(data_dir / "masks")
    for paths in image_clashes + mask_clashes:
        problems.append(f"{' and '.join(map(str, paths))} share the stem {paths[0].stem!r}: keep one of them")
    clashing = {paths[0].stem for paths in image_clashes + mask_clashes}
    images = {k: v for k, v in images.items() if k not in clashing}
    masks = {k: v for k, v in masks.items() if k not in clashing}
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
        img, mask, why = read_pair(img_path, mask_path, schema)
        problems += why
        if img is None or mask is None:
            continue
        if img.shape[:2] != mask.shape:
            problems.append(f"{mask_path}: size {mask.shape[1]}x{mask.shape[0]} differs from its image "
                            f"{img_path.name} {img.shape[1]}x{img.shape[0]}")
            continue
        stems.append(stem)
        images.append(resize_rgb(img, (image_size, image_size)))
        masks.append(resize_labels(mask, (image_size, image_size)))
        full_masks.append(mask)
    if problems:
        raise DatasetError(data_dir, problems)
    return Dataset(data_dir, schema, stems, np.stack(images), np.stack(masks), full_masks)
