"""The model builder's options: a UNet decoder that stops early (``head_scale``) and the model file
that must rebuild it."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from workbench.core.schema import DEFAULT_SCHEMA
from workbench.data.preprocess import normalization_meta
from workbench.exceptions import ConfigError
from workbench.models.build import build_model
from workbench.models.modelfile import load_model, save_model

C = DEFAULT_SCHEMA.num_classes
# metadata of the tiny UNet whose decoder stops at 1/4 (head_scale 4), as a model file stores it
STOPPED_UNET_META = {"arch": "unet", "encoder": "tf_efficientnet_lite0", "head_scale": 4,
                     "schema": DEFAULT_SCHEMA.to_dict(), "input_size": [64, 64],
                     "normalization": normalization_meta("imagenet"), "resize": "squash"}


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
    meta = dict(STOPPED_UNET_META)
    save_model(tmp_path / "m.safetensors", model, meta)
    loaded, meta = load_model(tmp_path / "m.safetensors")
    assert meta["head_scale"] == 4
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_float16_file_keeps_batchnorm_statistics_beyond_float16_range(tmp_path):
    """A running variance above 65504 (the 64-epoch final model had 7.5e4) is infinite in float16:
    the narrowed file keeps BatchNorm statistics in float32 and the model's outputs unchanged."""
    torch.manual_seed(0)
    model = build_model("unet", "tf_efficientnet_lite0", C, None, head_scale=4).eval()
    bn = next(m for m in model.decoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():
        bn.running_var[0] = 7.5e4
    meta = dict(STOPPED_UNET_META)
    save_model(tmp_path / "m.safetensors", model, meta, dtype=torch.float16)
    stored = load_file(str(tmp_path / "m.safetensors"))
    dtypes = {k: v.dtype for k, v in stored.items() if v.is_floating_point()}
    assert {dtypes[k] for k in dtypes if k.endswith(("running_mean", "running_var"))} == {torch.float32}
    assert {dtypes[k] for k in dtypes if not k.endswith(("running_mean", "running_var"))} == {torch.float16}
    loaded, meta = load_model(tmp_path / "m.safetensors")
    assert meta["weights_dtype"] == "float16"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=2e-2, rtol=2e-2)


def test_deep_supervision_heads_see_the_stages_before_the_last_in_training_only():
    from workbench.models.deep_supervision import aux_logits

    model = build_model("unet", "tf_efficientnet_lite0", C, None, head_scale=4, aux_heads=2).train()
    model(torch.randn(2, 3, 64, 64))
    aux = aux_logits(model)
    assert [a.shape for a in aux] == [(2, C, 8, 8), (2, C, 4, 4)]  # 1/8 then 1/16
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    with pytest.raises(RuntimeError, match="training mode"):
        aux_logits(model)  # nothing recorded in eval mode (and the last features were released)


def test_deep_supervision_after_a_bf16_autocast_forward():
    """Training with bf16 autocast (a CPU with native bf16, or CUDA) computes the auxiliary heads in the
    loss, outside autocast, on bf16 features: they must still run and pass gradients back."""
    from workbench.models.deep_supervision import aux_logits
    from workbench.training.losses import SegLoss
    from workbench.training.trainer import supervised_loss

    model = build_model("unet", "tf_efficientnet_lite0", C, None, head_scale=4, aux_heads=2).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randn(2, 3, 64, 64))
    assert logits.dtype == torch.bfloat16
    target = torch.randint(0, C, (2, 64, 64))
    _, loss = supervised_loss(SegLoss("ce_dice", C), model, logits, target, [0.5, 0.25])
    loss.backward()
    assert torch.isfinite(loss) and all(h.weight.grad is not None for h in model.aux_heads)
    assert aux_logits(build_model("unet", "tf_efficientnet_lite0", C, None, head_scale=4)) == []


@pytest.mark.parametrize("arch, heads", [("fpn", 1), ("unet", 5)])
def test_deep_supervision_refused_where_it_cannot_apply(arch, heads):
    with pytest.raises(ConfigError, match="deep_supervision"):
        build_model(arch, "tf_efficientnet_lite0", C, None, aux_heads=heads)


def test_model_file_leaves_the_training_only_heads_out(tmp_path):
    torch.manual_seed(0)
    model = build_model("unet", "tf_efficientnet_lite0", C, None, head_scale=4, aux_heads=2).eval()
    meta = dict(STOPPED_UNET_META)
    save_model(tmp_path / "m.safetensors", model, meta)
    loaded, _ = load_model(tmp_path / "m.safetensors")
    assert not hasattr(loaded, "aux_heads")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_deep_supervision_loss_by_hand():
    import torch.nn.functional as F

    from workbench.training.losses import SegLoss, deep_supervision_loss

    torch.manual_seed(0)
    seg = SegLoss("ce_dice", C)
    target = torch.randint(0, C, (2, 16, 16))
    main_logits, a8, a4 = torch.randn(2, C, 16, 16), torch.randn(2, C, 8, 8), torch.randn(2, C, 4, 4)
    main = seg(main_logits, target)
    up = [F.interpolate(a, size=(16, 16), mode="bilinear", align_corners=False) for a in (a8, a4)]
    want = (main + 0.5 * seg(up[0], target) + 0.25 * seg(up[1], target)) / 1.75
    torch.testing.assert_close(deep_supervision_loss(seg, main, [a8, a4], target, [0.5, 0.25]), want)
    torch.testing.assert_close(deep_supervision_loss(seg, main, [a8, a4], target, [0.0, 0.0]), main)


def test_training_with_deep_supervision_trains_the_heads_and_ships_without_them(tiny_data, tmp_path, monkeypatch):
    from conftest import tiny_overrides
    from workbench.core import config
    from workbench.data.dataset import load_dataset
    from workbench.data.folds import split_for
    from workbench.training import fit
    from workbench.training.checkpoint import load_checkpoint

    cfg = config.resolve(tiny_overrides(tiny_data, tmp_path / "run", max_steps=2, head_scale=4,
                                        deep_supervision="[0.5,0.25]", save_oof=False))
    ds = load_dataset(cfg["data"], cfg["image_size"])
    train_idx, val_idx, _ = split_for(cfg, ds)
    import workbench.training.trainer as trainer_mod

    seen = []

    def spy(model):  # the heads' weights before the first optimiser step, and how many maps the loss gets
        if not seen:
            seen.append({k: v.clone() for k, v in model.aux_heads.state_dict().items()})
        out = real(model)
        seen.append(len(out))
        return out

    real = trainer_mod.aux_logits
    monkeypatch.setattr(trainer_mod, "aux_logits", spy)
    fit(cfg, ds, train_idx, val_idx)
    start = seen[0]
    assert seen[1:] == [2, 2]  # both steps added both auxiliary maps
    trained = load_checkpoint(tmp_path / "run", cfg)["model"]
    moved = [k for k in start if not torch.equal(start[k], trained["aux_heads." + k])]
    assert moved, "the auxiliary heads did not learn"
    loaded, meta = load_model(tmp_path / "run" / "model.safetensors")
    assert meta["head_scale"] == 4 and not hasattr(loaded, "aux_heads")
