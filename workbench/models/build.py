"""Segmentation models: smp architectures (Unet, FPN, ...) over timm encoders (``tu-<name>``)."""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.base import SegmentationHead
from segmentation_models_pytorch.base import initialization as smp_init

from ..exceptions import ConfigError
from .deep_supervision import attach_aux_heads
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


HEAD_SCALES = (1, 2, 4)


def build_model(arch: str, encoder: str, num_classes: int, encoder_weights: str | None = None,
                decoder_channels=None, head_scale: int = 1, aux_heads: int = 0) -> torch.nn.Module:
    """An smp model with a timm encoder; logits of shape (N, num_classes, H, W).

    ``encoder`` is a timm model name (``tf_efficientnet_lite0``, ``convnext_tiny``, ...).
    ``encoder_weights`` is resolved offline by :mod:`workbench.models.encoders`.
    ``head_scale`` (UNet only): the decoder stops at 1/head_scale of the input size and the head's
    logits are upsampled bilinearly, as FPN's are from 1/4 (see :func:`stop_decoder_at`).
    ``aux_heads`` (UNet only, training): deep-supervision heads, :mod:`.deep_supervision`.
    """
    try:
        model = smp.create_model(arch, encoder_name=f"tu-{encoder}", encoder_weights=None, classes=num_classes,
                                 **decoder_kwargs(arch, decoder_channels))
    except (KeyError, ValueError, RuntimeError) as err:
        raise ConfigError(f"cannot build {arch} with encoder {encoder!r}: {err}") from err
    if head_scale != 1:
        stop_decoder_at(model, arch, head_scale, num_classes)
    if aux_heads:
        attach_aux_heads(model, arch, aux_heads, num_classes)
    load_encoder_weights(model.encoder.model, encoder, encoder_weights)
    return model


def stop_decoder_at(model: torch.nn.Module, arch: str, head_scale: int, num_classes: int) -> None:
    """Drop a UNet decoder's last stages so that it ends at 1/``head_scale`` resolution, with a new
    3x3 head whose logits are upsampled bilinearly to the input size.

    Measured on our data (README, Design choices): smp's full-resolution stages (32 and 16 channels
    at 1/2 and 1/1) make the UNet learn far more slowly than FPN from the same pretrained encoder."""
    if arch.lower() != "unet":
        raise ConfigError(f"head_scale={head_scale} is for arch=unet (FPN always predicts at 1/4), not {arch!r}")
    if head_scale not in HEAD_SCALES:
        raise ConfigError(f"head_scale={head_scale}: choose one of {list(HEAD_SCALES)}")
    keep = len(model.decoder.blocks) - (head_scale.bit_length() - 1)
    model.decoder.blocks = model.decoder.blocks[:keep]  # smp's decoder loop runs over the blocks it has
    width = model.decoder.blocks[-1].conv2[0].out_channels
    model.segmentation_head = SegmentationHead(width, num_classes, kernel_size=3, upsampling=head_scale)
    smp_init.initialize_head(model.segmentation_head)  # as smp initialises its own heads


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
