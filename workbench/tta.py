"""Orientation-aware horizontal-flip test-time augmentation.

A mirrored car is still a car, but its left parts become right parts: after un-flipping the mirror's
prediction we reorder its class channels by the schema's flip permutation (left/right pairs swap,
everything else - front/rear included - stays) before averaging with the plain prediction.
"""

from __future__ import annotations

import numpy as np
import torch


def unflip_probs(probs_of_mirror: torch.Tensor, flip_perm: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Map (N, C, H, W) class probabilities predicted on a mirrored image back to the original frame."""
    perm = torch.as_tensor(np.asarray(flip_perm), dtype=torch.long, device=probs_of_mirror.device)
    return probs_of_mirror.flip(-1)[:, perm]


def predict_probs(model: torch.nn.Module, x: torch.Tensor, flip_perm=None, tta: bool = True) -> torch.Tensor:
    """Softmax probabilities (N, C, H, W) in float32, averaged over the image and its mirror if ``tta``."""
    probs = model(x).float().softmax(1)
    if tta:
        if flip_perm is None:
            raise ValueError("flip TTA needs the schema's flip permutation")
        probs = 0.5 * (probs + unflip_probs(model(x.flip(-1)).float().softmax(1), flip_perm))
    return probs
