"""Where and in which precision models run: device choice and autocast, shared by training,
distillation and inference."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA if available, else CPU; any other torch device string is checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here (use --device cpu or auto)")
    return device


def autocast(device: torch.device, precision: str):
    """bf16 autocast (``auto``/``bf16``): about 2x faster than fp32 on our 2-core CPU and needs no loss
    scaling on GPUs; fp16 on CUDA devices without bf16; ``fp32`` disables it."""
    enabled = precision in ("auto", "bf16")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.float16, enabled=enabled)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
