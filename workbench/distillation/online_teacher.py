"""Online soft labels: the teaching ensemble run on the very batch the student trains on.

Cached soft labels (:mod:`.soft_labels`) are the teachers' view of the *clean* image, warped and
cropped with it: the colour jitter, blur and noise the student sees never reach them, and on images
the teachers trained on they agree with the hard labels on 96-98 % of pixels (README, Distillation),
so KD adds little beyond the labels. With ``kd_targets: online`` the teachers predict each augmented
crop exactly as the student gets it ("consistent teaching": Beyer et al. 2022, *Knowledge
distillation: A good teacher is patient and consistent*), through the same
:func:`~.soft_labels.ensemble_probs` as the cache, flip TTA included. The cost is the teachers'
forward passes at every step (two per teacher); nothing is stored. Pixels that spatial augmentation
padded (outside the warped image) get no target, as with the cache: the trainer hands the loss a
``valid`` mask with each batch (:class:`~workbench.training.array_dataset.ArrayDataset`).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ..core.console import console
from ..core.runtime import resolve_device
from ..data import Dataset
from ..exceptions import DistillError
from .soft_labels import (check_input_size, describe_teachers, ensemble_probs, load_teaching_models, teacher_records,
                          teacher_weights)
from .teachers import Teacher


class OnlineTeacher:
    """The teaching ensemble of ``teachers`` (weights per family), held in memory; calling it on a
    batch of uint8 (N, H, W, 3) images gives their float32 (N, C, H, W) probabilities on the batch's
    device (the teachers are copied there on first use: one DDP process per GPU), as a plain tensor
    the KD loss may use in its graph (the teachers get no gradient)."""

    def __init__(self, teachers: list[Teacher], family_weights: dict[str, float], ds: Dataset, device_name: str = "auto"):
        weights = teacher_weights(teachers, family_weights)
        check_input_size(teachers, ds.images.shape[1])
        self.device = resolve_device(device_name)
        self.models = {self.device: load_teaching_models(teachers, weights, self.device)}
        self.flip_perm = ds.schema.flip_permutation
        self.teachers = teacher_records(teachers, weights)
        self.described = describe_teachers(teachers, weights)
        console.print(f"online soft labels (each augmented batch) from {self.described}", markup=False)

    def __call__(self, images: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Probabilities of the batch; with ``valid`` (N, H, W), zero where it is False (padding:
        no target there, see :func:`workbench.training.losses.kd_loss`)."""
        device = images.device
        if device not in self.models:
            self.models[device] = [(w, copy.deepcopy(m).to(device), norm) for w, m, norm in self.models[self.device]]
        probs = ensemble_probs(self.models[device], images, self.flip_perm, device)
        if not bool(torch.isfinite(probs).all()):
            raise DistillError(f"a teacher produced non-finite probabilities (a diverged model?); teachers: {self.described}")
        return probs if valid is None else probs * valid[:, None].to(probs.dtype)

    def preview(self, ds: Dataset, indices, transform=None) -> "Preview":
        """The targets on the images ``indices``, row by row, for :func:`~.soft_labels.confidence_summary`:
        on the clean images, or on one draw of the training ``transform`` (image and mask augmented together)."""
        return Preview(self, ds, indices, transform)


class Preview:
    """``rows``, ``[dataset index] -> (H, W, C) probabilities`` (like a soft-label cache, computed on
    demand; H = W = the crop size after a cropping transform) and ``masks[dataset index]``: the mask of
    the image the teachers saw, augmented with it (padding counts as background, as in training's hard loss)."""

    def __init__(self, teacher: OnlineTeacher, ds: Dataset, indices, transform=None):
        self.teacher, self.ds, self.transform = teacher, ds, transform
        self.rows = {int(i): r for r, i in enumerate(np.asarray(indices))}
        self.masks = _Masks(self)
        self._views: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # the rows drawn so far

    def view(self, dataset_index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image, mask) of one row, augmented once per row (asking again returns the same draw)."""
        i = int(dataset_index)
        if i not in self._views:
            image, mask = self.ds.images[i], self.ds.masks[i]
            if self.transform is not None:
                out = self.transform(image=image, mask=mask)
                image, mask = out["image"], out["mask"]
            self._views[i] = (np.ascontiguousarray(image), np.ascontiguousarray(mask))
        return self._views[i]

    def __getitem__(self, dataset_index: int) -> np.ndarray:
        image = torch.from_numpy(self.view(dataset_index)[0][None]).to(self.teacher.device)
        return self.teacher(image)[0].permute(1, 2, 0).cpu().numpy()


class _Masks:
    def __init__(self, preview: Preview):
        self.preview = preview

    def __getitem__(self, dataset_index: int) -> np.ndarray:
        return self.preview.view(dataset_index)[1]
