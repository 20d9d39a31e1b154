"""From uint8 RGB images (already squashed to the model's input size by
:func:`workbench.data.resize.resize_rgb`) to normalised model input tensors, identical in training,
distillation, inference and analysis."""

from __future__ import annotations

import numpy as np
import torch

from ..exceptions import ConfigError

NORMALIZATIONS = {
    # (mean, std) applied to RGB / 255
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # plain x / 255, as in the H2O seed
}


def normalization_meta(name: str) -> dict:
    if name not in NORMALIZATIONS:
        raise ConfigError(f"unknown normalization {name!r}; choose from {sorted(NORMALIZATIONS)}")
    mean, std = NORMALIZATIONS[name]
    return {"name": name, "mean": list(mean), "std": list(std)}


def to_tensor(images: np.ndarray | torch.Tensor, normalization: dict, device=None) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float32 normalised, channels_last memory format."""
    x = torch.as_tensor(images, device=device).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(normalization["mean"], device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(normalization["std"], device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)
