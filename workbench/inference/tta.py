"""Orientation-aware horizontal-flip test-time augmentation: the one place where a model is run on
images and their mirrors.

A mirrored car is still a car, but its left parts become right parts: after un-flipping the mirror's
prediction we reorder its class channels by the schema's flip permutation (left/right pairs swap,
everything else - front/rear included - stays) before averaging with the plain prediction.

- :func:`flip_tta` - one batch of input tensors -> flip-TTA probabilities (or both views). Every
  model forward of validation, OOF export, soft labels, the :class:`~workbench.inference.predictor.Predictor`
  and the analysis goes through it.
- :func:`predict_arrays` - :func:`flip_tta` over in-RAM uint8 images, batch by batch.
- :func:`merge_views` - the average of the two views, also for views stored on disk (OOF files).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.runtime import autocast
from ..data.preprocess import normalization_meta, to_tensor


@dataclass
class FlipViews:
    """Class probabilities (N, C, H, W) float32 of the images and of their mirrors (un-flipped and
    channel-permuted, i.e. in the images' frame); ``mirrored`` is None when no flip was run."""
    plain: torch.Tensor
    mirrored: torch.Tensor | None = None

    def mean(self) -> torch.Tensor:
        """The flip-TTA probabilities (the plain view alone without a mirror)."""
        return self.plain if self.mirrored is None else merge_views(self.plain, self.mirrored)


def unflip_probs(probs_of_mirror: torch.Tensor, flip_perm: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Map (N, C, H, W) class probabilities predicted on a mirrored image back to the original frame."""
    perm = torch.as_tensor(np.asarray(flip_perm), dtype=torch.long, device=probs_of_mirror.device)
    return probs_of_mirror.flip(-1)[:, perm]


def merge_views(plain, mirrored):
    """Flip-TTA average of the two views (torch tensors or numpy arrays of probabilities)."""
    return 0.5 * (plain + mirrored)


def flip_tta(model: torch.nn.Module, x: torch.Tensor, flip_perm=None, *, precision: str = "fp32",
             parts: bool = False) -> torch.Tensor | FlipViews:
    """Flip-TTA softmax probabilities of ``model`` on the input batch ``x`` (N, 3, H, W).

    Runs ``model(x)`` and, when ``flip_perm`` (the schema's :attr:`~workbench.core.schema.ClassSchema.flip_permutation`)
    is given, ``model(mirror of x)``, whose probabilities are mirrored back and channel-permuted by
    ``flip_perm``; returns their average, float32 (N, C, H, W). ``flip_perm=None``: the plain forward
    pass only (no TTA). ``parts=True`` returns :class:`FlipViews` (plain and mirrored) instead, for
    callers that keep both (OOF export, flip consistency). ``precision`` is the autocast policy of
    :func:`workbench.core.runtime.autocast` (``fp32``: none).
    """
    with autocast(x.device, precision):
        logits = model(x)
    views = FlipViews(logits.float().softmax(1))
    if flip_perm is not None:
        with autocast(x.device, precision):
            logits = model(x.flip(-1))
        views.mirrored = unflip_probs(logits.float().softmax(1), flip_perm)
    return views if parts else views.mean()


@torch.inference_mode()
def predict_arrays(model: torch.nn.Module, images: np.ndarray, normalization: dict, device, *, flip_perm=None,
                   precision: str = "fp32", parts: bool = False, batch_size: int = 16) -> torch.Tensor | FlipViews:
    """:func:`flip_tta` over (N, S, S, 3) uint8 RGB images already at the model's input size,
    ``batch_size`` at a time; CPU float32 (N, C, S, S) probabilities (or :class:`FlipViews`)."""
    plain, mirrored = [], []
    for i in range(0, len(images), batch_size):
        x = to_tensor(images[i:i + batch_size], normalization, device)
        views = flip_tta(model, x, flip_perm, precision=precision, parts=True)
        if parts:
            plain.append(views.plain.cpu())
            if views.mirrored is not None:
                mirrored.append(views.mirrored.cpu())
        else:
            plain.append(views.mean().cpu())
    cat = lambda ts: torch.cat(ts) if ts else torch.empty(0)  # noqa: E731
    if not parts:
        return cat(plain)
    return FlipViews(cat(plain), cat(mirrored) if flip_perm is not None else None)
