"""Resizing photos and label maps, the same way everywhere (training set, model input, analysis panels).

Photos are squashed (not letterboxed) to the target size - the DSMLR photos were themselves squashed
to 512x512 - with an area filter when shrinking and bilinear when enlarging. Label maps (class
indices or values) are resized nearest-neighbour so that no new labels appear.
"""

from __future__ import annotations

import cv2
import numpy as np


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> ``size`` = (height, width); area filter when shrinking."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    shrink = image.shape[0] > h or image.shape[1] > w
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) label map -> ``size`` = (height, width), nearest neighbour."""
    h, w = size
    if labels.shape[:2] == (h, w):
        return labels
    return cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
