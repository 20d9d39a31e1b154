"""The in-RAM training set handed to the DataLoader: images and masks already decoded and resized,
optional soft labels (rows of a memory-mapped cache), augmented on the fly."""

from __future__ import annotations

import numpy as np
import torch


class ArrayDataset(torch.utils.data.Dataset):
    """Images/masks already in RAM (N, S, S, 3) / (N, S, S); optional soft labels, one (S, S, C)
    array per image, which the transform treats as a mask (the label-swapping flip permutes their
    channels)."""

    def __init__(self, images, masks, transform=None, soft=None):
        self.images, self.masks, self.transform, self.soft = images, masks, transform, soft

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        item = {"image": self.images[i], "mask": self.masks[i]}
        if self.soft is not None:
            item["soft"] = np.array(self.soft[i])  # copy: rows of a read-only memory map
        if self.transform is not None:
            item = self.transform(**item)
        out = {"image": torch.from_numpy(np.ascontiguousarray(item["image"])),
               "mask": torch.from_numpy(np.ascontiguousarray(item["mask"])).long()}
        if self.soft is not None:
            out["soft"] = torch.from_numpy(np.ascontiguousarray(item["soft"]))
        return out


class RowSubset:
    """Lazy row selection of a (memory-mapped) array, so soft labels are never copied whole."""

    def __init__(self, array, idx):
        self.array, self.idx = array, np.asarray(idx)

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, i):
        return self.array[self.idx[i]]
