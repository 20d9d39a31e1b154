"""The losses against references: CE + Dice equals torch's CE plus smp's multiclass Dice (value and
gradient); the KD term against a hand computation."""

import math

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from workbench.training.losses import SegLoss, kd_loss


def test_ce_dice_equals_torch_ce_plus_smp_dice():
    torch.manual_seed(0)
    for memory_format in (torch.channels_last, torch.contiguous_format):
        x = torch.randn(3, 6, 20, 24).contiguous(memory_format=memory_format).requires_grad_()
        y = torch.randint(0, 6, (3, 20, 24))
        y[y == 4] = 0  # a class absent from the batch
        ref = F.cross_entropy(x, y) + 0.5 * smp.losses.DiceLoss("multiclass", from_logits=True)(x, y)
        (g_ref,) = torch.autograd.grad(ref, x)
        ours = SegLoss("ce_dice", 6, dice_weight=0.5)(x, y)
        (g_ours,) = torch.autograd.grad(ours, x)
        assert torch.allclose(ours, ref, atol=1e-6)
        assert torch.allclose(g_ours, g_ref, atol=1e-8)


def test_kd_loss_by_hand():
    # one pixel, two classes: teacher p = (0.8, 0.2), student logits (0, 0); plus one padded pixel
    teacher = torch.tensor([[[[0.8, 0.0]], [[0.2, 0.0]]]])  # (1, 2, 1, 2): second pixel has no soft label
    student = torch.zeros(1, 2, 1, 2)
    for T in (1.0, 2.0):
        a, b = math.log(0.8) / T, math.log(0.2) / T
        pt = [math.exp(a) / (math.exp(a) + math.exp(b)), math.exp(b) / (math.exp(a) + math.exp(b))]
        kl = sum(p * (math.log(p) - math.log(0.5)) for p in pt)
        assert math.isclose(float(kd_loss(student, teacher, T)), kl * T * T, rel_tol=1e-5)
