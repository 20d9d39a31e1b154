"""Deep supervision for UNet decoders (as nnU-Net trains its UNets): 1x1 auxiliary heads on the
decoder stages above the last one, each with its own weighted loss during training only.

UNet's coarse features reach the head through every decoder stage in turn; the auxiliary losses
give the coarse stages a short gradient path (FPN has one by design: every pyramid level is summed
into its head). Measured on our data in the README (Design choices).

The auxiliary heads live in the model as ``aux_heads`` so that checkpoints resume them, but they
never leave training: :func:`drop_training_only` removes them from the weights a model file stores,
and evaluation mode does not even record the decoder's intermediate features.
"""

from __future__ import annotations

import torch
from torch import nn

from ..exceptions import ConfigError

TRAINING_ONLY_PREFIX = "aux_heads."


def attach_aux_heads(model: nn.Module, arch: str, count: int, num_classes: int) -> None:
    """Give ``model`` ``count`` auxiliary heads on the decoder stages before its last one (the
    nearest first) and a forward hook per stage that records its output in training mode."""
    if arch.lower() != "unet":
        raise ConfigError(f"deep_supervision is for arch=unet (its decoder stages in sequence), not {arch!r}")
    blocks = model.decoder.blocks
    if not 1 <= count < len(blocks):
        raise ConfigError(f"deep_supervision: {count} auxiliary heads asked for, the decoder has "
                          f"{len(blocks) - 1} stages before its last one")
    stages = [blocks[len(blocks) - 2 - k] for k in range(count)]
    model.aux_heads = nn.ModuleList(nn.Conv2d(s.conv2[0].out_channels, num_classes, 1) for s in stages)
    model.aux_features = [None] * count

    for k, stage in enumerate(stages):
        def record(module, inputs, output, k=k):
            if model.training:
                model.aux_features[k] = output
        stage.register_forward_hook(record)


def aux_logits(model: nn.Module) -> list[torch.Tensor]:
    """The auxiliary heads' logits on the features of the last training-mode forward pass (the
    nearest stage first); empty for a model without deep supervision. The features are released."""
    model = getattr(model, "module", model)  # a DDP wrapper's model
    heads = getattr(model, "aux_heads", None)
    if heads is None:
        return []
    features, model.aux_features = model.aux_features, [None] * len(heads)
    if any(f is None for f in features):
        raise RuntimeError("aux_logits() needs a forward pass in training mode first")
    # the features may come from a bf16 autocast forward while the heads run after it (in the loss): in the
    # heads' own dtype, a 1x1 convolution's worth of fp32
    return [head(f.to(head.weight.dtype)) for head, f in zip(heads, features)]


def drop_training_only(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the auxiliary heads: what a model file for inference keeps."""
    return {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY_PREFIX)}
