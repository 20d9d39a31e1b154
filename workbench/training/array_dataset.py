"""The in-RAM training set handed to the DataLoader: images and masks already decoded and resized,
optional soft labels (rows of a memory-mapped cache), augmented on the fly."""

from __future__ import annotations

import random

import numpy as np
import torch


class ArrayDataset(torch.utils.data.Dataset):
    """Images/masks already in RAM (N, S, S, 3) / (N, S, S); optional soft labels, one (S, S, C)
    array per image, which the transform treats as a mask (the label-swapping flip permutes their
    channels). ``valid=True`` adds a boolean (H, W) ``valid`` item: False where spatial augmentation
    padded, for targets that are not warped with the image (online distillation). It travels as a
    2-D mask of 255s, a value the label-swapping flip leaves alone."""

    def __init__(self, images, masks, transform=None, soft=None, valid: bool = False):
        self.images, self.masks, self.transform, self.soft, self.valid = images, masks, transform, soft, valid

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        item = {"image": self.images[i], "mask": self.masks[i]}
        if self.soft is not None:
            item["soft"] = np.array(self.soft[i])  # copy: rows of a read-only memory map
        if self.valid:
            item["valid"] = np.full(self.masks[i].shape[:2], 255, np.uint8)
        if self.transform is not None:
            item = self.transform(**item)
        out = {"image": torch.from_numpy(np.ascontiguousarray(item["image"])),
               "mask": torch.from_numpy(np.ascontiguousarray(item["mask"])).long()}
        if self.soft is not None:
            out["soft"] = torch.from_numpy(np.ascontiguousarray(item["soft"]))
        if self.valid:
            out["valid"] = torch.from_numpy(np.ascontiguousarray(item["valid"]) > 0)
        return out


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` of the training DataLoader: each worker augments with its own random stream,
    seeded from the seed torch hands it (drawn from the loader's generator, which the trainer re-seeds
    every epoch, plus ``worker_id``), so workers never repeat one another's crops and a resumed epoch
    repeats exactly."""
    info = torch.utils.data.get_worker_info()
    seed = info.seed % 2**32
    np.random.seed(seed)
    random.seed(seed)
    if info.dataset.transform is not None:
        info.dataset.transform.set_random_seed(seed)


class RowSubset:
    """Lazy row selection of a (memory-mapped) array, so soft labels are never copied whole."""

    def __init__(self, array, idx):
        self.array, self.idx = array, np.asarray(idx)

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, i):
        return self.array[self.idx[i]]
