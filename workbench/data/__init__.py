"""Data stage: reading images and masks (imageio), resizing (resize), datasets validated and held in
RAM (dataset), k-fold assignment (folds), training augmentations (augment), model input tensors
(preprocess) and the COCO importer (coco)."""

from .dataset import Dataset, load_dataset

__all__ = ["Dataset", "load_dataset"]
