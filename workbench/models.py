"""Segmentation models: smp architectures (Unet, FPN, ...) over timm encoders (``tu-<name>``)."""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch

from .encoders import load_encoder_weights


def build_model(arch: str, encoder: str, num_classes: int, encoder_weights: str | None = None) -> torch.nn.Module:
    """An smp model with a timm encoder; logits of shape (N, num_classes, H, W).

    ``encoder`` is a timm model name (``tf_efficientnet_lite0``, ``convnext_tiny``, ...).
    ``encoder_weights`` is resolved offline by :mod:`workbench.encoders`.
    """
    try:
        model = smp.create_model(arch, encoder_name=f"tu-{encoder}", encoder_weights=None, classes=num_classes)
    except (KeyError, ValueError, RuntimeError) as err:
        raise ValueError(f"cannot build {arch} with encoder {encoder!r}: {err}") from err
    load_encoder_weights(model.encoder.model, encoder, encoder_weights)
    return model


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
