"""The model builder's options: a UNet decoder that stops early (``head_scale``) and the model file
that must rebuild it."""

from __future__ import annotations

import pytest
import torch

from workbench.core.schema import DEFAULT_SCHEMA
from workbench.data.preprocess import normalization_meta
from workbench.exceptions import ConfigError
from workbench.models.build import build_model
from workbench.models.modelfile import load_model, save_model

C = DEFAULT_SCHEMA.num_classes


@pytest.mark.parametrize("head_scale, blocks, head_width", [(1, 5, 16), (2, 4, 32), (4, 3, 64)])
def test_head_scale_stops_the_unet_decoder_and_upsamples_to_the_input(head_scale, blocks, head_width):
    model = build_model("unet", "tf_efficientnet_lite0", C, None, head_scale=head_scale).eval()
    assert len(model.decoder.blocks) == blocks
    assert model.segmentation_head[0].in_channels == head_width
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 96))
    assert logits.shape == (2, C, 64, 96)


def test_head_scale_4_logits_are_a_bilinear_upsampling_of_a_quarter_resolution_map():
    model = build_model("unet", "tf_efficientnet_lite0", C, None, head_scale=4).eval()
    seen = {}
    model.segmentation_head[0].register_forward_hook(lambda m, i, o: seen.setdefault("low", o))
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 64))
    assert seen["low"].shape[-2:] == (16, 16)
    expected = torch.nn.functional.interpolate(seen["low"], scale_factor=4, mode="bilinear", align_corners=True)
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize("arch, head_scale", [("fpn", 2), ("unet", 3), ("unet", 8)])
def test_head_scale_refused_where_it_means_nothing(arch, head_scale):
    with pytest.raises(ConfigError, match="head_scale"):
        build_model(arch, "tf_efficientnet_lite0", C, None, head_scale=head_scale)


def test_model_file_rebuilds_a_stopped_unet(tmp_path):
    torch.manual_seed(0)
    model = build_model("unet", "tf_efficientnet_lite0", C, None, head_scale=4).eval()
    meta = {"arch": "unet", "encoder": "tf_efficientnet_lite0", "head_scale": 4, "schema": DEFAULT_SCHEMA.to_dict(),
            "input_size": [64, 64], "normalization": normalization_meta("imagenet"), "resize": "squash"}
    save_model(tmp_path / "m.safetensors", model, meta)
    loaded, meta = load_model(tmp_path / "m.safetensors")
    assert meta["head_scale"] == 4
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
