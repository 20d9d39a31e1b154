"""Segmentation models: smp architectures (Unet, FPN, ...) over timm encoders (``tu-<name>``)."""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch

from ..exceptions import ConfigError
from .encoders import load_encoder_weights


def decoder_kwargs(arch: str, decoder_channels) -> dict:
    """smp keyword arguments for ``decoder_channels``: UNet-like decoders take one width per stage,
    FPN takes ``[pyramid, segmentation]`` widths; empty = smp's defaults."""
    channels = [int(c) for c in (decoder_channels or [])]
    if not channels:
        return {}
    if arch.lower() == "fpn":
        if len(channels) != 2:
            raise ConfigError(f"fpn decoder_channels={channels}: expected [pyramid, segmentation]")
        return {"decoder_pyramid_channels": channels[0], "decoder_segmentation_channels": channels[1]}
    return {"decoder_channels": channels}


def build_model(arch: str, encoder: str, num_classes: int, encoder_weights: str | None = None,
                decoder_channels=None) -> torch.nn.Module:
    """An smp model with a timm encoder; logits of shape (N, num_classes, H, W).

    ``encoder`` is a timm model name (``tf_efficientnet_lite0``, ``convnext_tiny``, ...).
    ``encoder_weights`` is resolved offline by :mod:`workbench.models.encoders`.
    """
    try:
        model = smp.create_model(arch, encoder_name=f"tu-{encoder}", encoder_weights=None, classes=num_classes,
                                 **decoder_kwargs(arch, decoder_channels))
    except (KeyError, ValueError, RuntimeError) as err:
        raise ConfigError(f"cannot build {arch} with encoder {encoder!r}: {err}") from err
    load_encoder_weights(model.encoder.model, encoder, encoder_weights)
    return model


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def parameter_groups(model: torch.nn.Module, lr: float, decoder_lr_mult: float = 1.0) -> list[dict]:
    """Optimiser groups: one group at ``lr`` when ``decoder_lr_mult`` is 1; otherwise the pretrained
    encoder at ``lr`` and the randomly initialised decoder + head at ``lr * decoder_lr_mult``."""
    if decoder_lr_mult == 1.0:
        return [{"params": list(model.parameters()), "lr": lr, "name": "all"}]
    encoder = {id(p) for p in model.encoder.parameters()}
    rest = [p for p in model.parameters() if id(p) not in encoder]
    return [{"params": list(model.encoder.parameters()), "lr": lr, "name": "encoder"},
            {"params": rest, "lr": lr * decoder_lr_mult, "name": "decoder"}]
