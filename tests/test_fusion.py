"""Folding BatchNorms into convolutions for inference (workbench/models/fusion.py): same output,
no BatchNorm left, and nothing folded where a convolution's output has another consumer."""

import pytest
import torch
from torch import nn

from workbench.models.build import build_model
from workbench.models.fusion import fuse_conv_bn


def with_random_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """BatchNorms with non-trivial running statistics and affine parameters, as after training."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


def batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("arch,extra", [("unet", {"head_scale": 4}), ("fpn", {"decoder_channels": [32, 32]})])
def test_fused_model_gives_the_same_logits_without_batchnorms(arch, extra):
    torch.manual_seed(0)
    model = with_random_statistics(build_model(arch, "tf_efficientnet_lite0", 5, **extra))
    probe = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert batchnorms(model) > 20
    fused = fuse_conv_bn(model, probe)
    assert fused is not model and batchnorms(fused) == 0 and batchnorms(model) > 20  # the original is untouched
    other = torch.rand(2, 3, 96, 64, generator=torch.Generator().manual_seed(2))  # another size and batch
    with torch.inference_mode():
        torch.testing.assert_close(fused(other), model(other), atol=1e-3, rtol=1e-3)  # float32 reassociation


class SharedConvOutput(nn.Module):
    """conv -> bn, but the conv's output also feeds a second module: folding would change that one."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.side = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Identity()

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + self.side(y)


class PlainConvBn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(3, 4, 3, padding=1, bias=True), nn.BatchNorm2d(4), nn.ReLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


def test_a_conv_output_with_another_consumer_is_not_folded():
    model = with_random_statistics(SharedConvOutput())
    assert fuse_conv_bn(model, torch.rand(1, 3, 8, 8)) is model


def test_conv_bias_and_batchnorm_fold_into_one_bias():
    model = with_random_statistics(PlainConvBn())
    x = torch.rand(2, 3, 8, 8)
    fused = fuse_conv_bn(model, x)
    assert isinstance(fused.bn, nn.Identity)
    torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-5)
