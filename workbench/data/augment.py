"""Training augmentations (albumentations) that know about orientation.

A horizontal flip turns a left door into a right door: :class:`HorizontalFlipSwap` mirrors the image
and relabels the mask with the schema's flip permutation; for per-class probability maps (soft
labels, H x W x C) it permutes the channels instead, so soft labels follow the image through every
spatial transform.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np


class HorizontalFlipSwap(A.DualTransform):
    """Horizontal flip that swaps left/right classes in masks (index masks and HWC probability maps)."""

    def __init__(self, flip_perm, p: float = 0.5):
        super().__init__(p=p)
        self.flip_perm = np.asarray(flip_perm, dtype=np.int64)
        self._lut = np.arange(256, dtype=np.uint8)  # ignore labels (>= C) map to themselves
        self._lut[: len(self.flip_perm)] = self.flip_perm

    def apply(self, img, **params):
        return np.ascontiguousarray(img[:, ::-1])

    def apply_to_mask(self, mask, **params):
        mask = mask[:, ::-1]
        if mask.ndim == 2:
            return np.ascontiguousarray(self._lut[mask])
        return np.ascontiguousarray(mask[..., self.flip_perm])

    def get_transform_init_args_names(self):
        return ("flip_perm",)


# Targets transformed like the mask: soft labels (H, W, C), and the mask of pixels inside the image.
EXTRA_TARGETS = {"soft": "mask", "valid": "mask"}


def build_train_transform(level: str, flip_perm, crop_size: int = 0) -> A.Compose | None:
    """``none``: no augmentation (the H2O seed); ``flip``: label-swapping flip only; ``standard``:
    flip + mild affine (cars are photographed at varying distance and tilt) + colour jitter (paint
    colours and lighting vary) + light blur. Soft labels go in as the additional target ``soft``.

    ``crop_size`` > 0 ends the pipeline with a random square crop of that size, taken after the
    affine so that the crop sees the rescaled/rotated image; image, mask and soft labels are cropped
    at the same place. The additional target ``valid`` (a uint8 mask, 255 inside the image, see
    :class:`~workbench.training.array_dataset.ArrayDataset`) comes out 0 where the affine padded."""
    crop = [A.RandomCrop(crop_size, crop_size)] if crop_size else []
    if level == "none":
        return A.Compose(crop, additional_targets=EXTRA_TARGETS) if crop else None
    ops = [HorizontalFlipSwap(flip_perm, p=0.5)]
    if level == "standard":
        ops += [
            A.Affine(scale=(0.75, 1.25), translate_percent=(-0.1, 0.1), rotate=(-10, 10),
                     border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.7),
            A.RandomBrightnessContrast(0.25, 0.25, p=0.5),
            A.HueSaturationValue(20, 30, 20, p=0.5),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.GaussNoise(std_range=(0.02, 0.06))], p=0.2),
        ]
    elif level != "flip":
        raise ValueError(f"unknown augment level {level!r}; choose none, flip or standard")
    return A.Compose(ops + crop, additional_targets=EXTRA_TARGETS)
