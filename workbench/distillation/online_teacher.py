"""Online soft labels: the teaching ensemble run on the very batch the student trains on.

Cached soft labels (:mod:`.soft_labels`) are the teachers' view of the *clean* image, warped and
cropped with it: the colour jitter, blur and noise the student sees never reach them, and on images
the teachers trained on they agree with the hard labels on 96-98 % of pixels (README, Distillation),
so KD adds little beyond the labels. With ``kd_targets: online`` the teachers predict each augmented
crop exactly as the student gets it ("consistent teaching": Beyer et al. 2022, *Knowledge
distillation: A good teacher is patient and consistent*), through the same
:func:`~.soft_labels.ensemble_probs` as the cache, flip TTA included. The cost is the teachers'
forward passes at every step (two per teacher); nothing is stored.
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.console import console
from ..core.runtime import resolve_device
from ..data import Dataset
from .soft_labels import check_input_size, ensemble_probs, load_teaching_models, teacher_records, teacher_weights
from .teachers import Teacher


class OnlineTeacher:
    """The teaching ensemble of ``teachers`` (weights per family), held in memory; calling it on a
    batch of uint8 (N, H, W, 3) images gives their float32 (N, C, H, W) probabilities on the batch's
    device, as a plain tensor the KD loss may use in its graph (the teachers get no gradient)."""

    def __init__(self, teachers: list[Teacher], family_weights: dict[str, float], ds: Dataset, device_name: str = "auto"):
        weights = teacher_weights(teachers, family_weights)
        check_input_size(teachers, ds.images.shape[1])
        self.device = resolve_device(device_name)
        self.models = load_teaching_models(teachers, weights, self.device)
        self.flip_perm = ds.schema.flip_permutation
        self.teachers = teacher_records(teachers, weights)
        console.print("online soft labels (each augmented batch) from {}".format(
            ", ".join(f"{t.label} ({weights[t.label]:.2f})" for t in teachers if weights[t.label] > 0)), markup=False)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return ensemble_probs(self.models, images, self.flip_perm, images.device)

    def preview(self, ds: Dataset, indices) -> "Preview":
        """The targets on the un-augmented images ``indices``, row by row, for
        :func:`~.soft_labels.confidence_summary` (it reads what a :class:`~.soft_labels.SoftLabels` offers)."""
        return Preview(self, ds, indices)


class Preview:
    """``rows`` and ``[dataset index] -> (S, S, C) probabilities`` like a soft-label cache, computed on demand."""

    def __init__(self, teacher: OnlineTeacher, ds: Dataset, indices):
        self.teacher, self.ds = teacher, ds
        self.rows = {int(i): r for r, i in enumerate(np.asarray(indices))}

    def __getitem__(self, dataset_index: int) -> np.ndarray:
        image = torch.from_numpy(np.ascontiguousarray(self.ds.images[int(dataset_index)][None])).to(self.teacher.device)
        return self.teacher(image)[0].permute(1, 2, 0).cpu().numpy()
