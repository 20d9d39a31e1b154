"""The losses against references: CE + Dice equals torch's CE plus smp's multiclass Dice (value and
gradient) and a hand computation; ``ce`` and ``bce_dice`` against torch/smp; the KD term (temperature on
both sides, T^2, padded pixels left out) and the student's kd_weight mix against hand computations."""

import math

import numpy as np

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


def test_kd_loss_tempers_both_sides_and_skips_padding_by_hand():
    """Two labelled pixels with non-zero student logits (so a temperature missing on the student side
    shows) and one padded pixel (all-zero soft label) that must not enter the mean."""
    teacher = torch.tensor([[[[0.7, 0.1, 0.0]], [[0.2, 0.6, 0.0]], [[0.1, 0.3, 0.0]]]])  # (1, 3, 1, 3)
    student = torch.tensor([[[[1.0, -0.5, 5.0]], [[0.0, 2.0, -5.0]], [[-1.0, 0.5, 0.0]]]])
    for T in (1.0, 2.0, 4.0):
        kls = []
        for px in range(2):
            t = [math.log(float(teacher[0, c, 0, px])) / T for c in range(3)]
            s = [float(student[0, c, 0, px]) / T for c in range(3)]
            zt, zs = math.log(sum(map(math.exp, t))), math.log(sum(map(math.exp, s)))
            kls.append(sum(math.exp(a - zt) * ((a - zt) - (b - zs)) for a, b in zip(t, s)))
        expected = T * T * sum(kls) / 2
        assert math.isclose(float(kd_loss(student, teacher, T)), expected, rel_tol=1e-4), T  # float32
    assert float(kd_loss(student, torch.zeros_like(teacher), 2.0)) == 0.0  # nothing labelled: zero, not NaN


def test_kd_loss_gradient_pulls_the_student_towards_the_teacher():
    teacher = torch.tensor([[[[0.9]], [[0.1]]]])
    student = torch.zeros(1, 2, 1, 1, requires_grad=True)
    kd_loss(student, teacher, 2.0).backward()
    assert student.grad[0, 0, 0, 0] < 0 < student.grad[0, 1, 0, 0]


def test_student_loss_mixes_kd_and_hard_loss_by_kd_weight():
    """``make_kd_loss`` (the student's training loss): kd_weight * KD + (1 - kd_weight) * hard, or with
    ``kd_mix: additive`` hard + kd_weight * KD."""
    from workbench.distillation.student import make_kd_loss

    torch.manual_seed(1)
    logits = torch.randn(2, 3, 4, 5)
    soft = torch.rand(2, 4, 5, 3)
    soft = soft / soft.sum(-1, keepdim=True)  # (N, H, W, C) probabilities, as the data loader hands them
    hard = torch.tensor(1.25)
    kd = float(kd_loss(logits, soft.permute(0, 3, 1, 2), 2.0))
    assert kd > 0.01
    for w in (0.0, 0.3, 0.7, 1.0):
        got = float(make_kd_loss(2.0, w)(logits, {"soft": soft}, hard))
        assert math.isclose(got, w * kd + (1 - w) * 1.25, rel_tol=1e-6), w
        added = float(make_kd_loss(2.0, w, "additive")(logits, {"soft": soft}, hard))
        assert math.isclose(added, w * kd + 1.25, rel_tol=1e-6), w  # the hard loss keeps its full weight


def test_ce_and_bce_dice_against_torch_and_smp():
    torch.manual_seed(2)
    x = torch.randn(2, 4, 6, 7)
    y = torch.randint(0, 4, (2, 6, 7))
    assert torch.allclose(SegLoss("ce", 4, dice_weight=0.5)(x, y), F.cross_entropy(x, y), atol=1e-6)
    onehot = F.one_hot(y, 4).permute(0, 3, 1, 2).float()
    ref = (F.binary_cross_entropy_with_logits(x, onehot)
           + 0.25 * smp.losses.DiceLoss("multilabel", from_logits=True)(x, onehot))
    assert torch.allclose(SegLoss("bce_dice", 4, dice_weight=0.25)(x, y), ref, atol=1e-6)


def test_ce_dice_by_hand_on_one_image():
    """Dice from first principles on a 1x2 image with classes {0, 1} of 3 (class 2 absent: no term)."""
    x = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]], [[0.0, 0.0]]]])  # (1, 3, 1, 2)
    y = torch.tensor([[[0, 1]]])
    p = x.softmax(1)[0, :, 0]  # (3, 2)
    ce = -(math.log(p[0, 0]) + math.log(p[1, 1])) / 2
    dice0 = 1 - 2 * p[0, 0] / (p[0].sum() + 1)
    dice1 = 1 - 2 * p[1, 1] / (p[1].sum() + 1)
    expected = ce + 0.5 * float(dice0 + dice1 + 0) / 3
    assert math.isclose(float(SegLoss("ce_dice", 3, dice_weight=0.5)(x, y)), expected, rel_tol=1e-6)


def test_channel_kd_loss_by_hand():
    """Channel-wise KD: per image and class, KL between the spatial softmaxes of teacher log-probs / T
    and student log-probs / T over the labelled pixels, averaged, times T^2; padding pixels left out."""
    from workbench.training.losses import channel_kd_loss

    torch.manual_seed(3)
    student = torch.randn(2, 3, 2, 3)
    teacher = torch.softmax(torch.randn(2, 3, 2, 3) * 2, 1)
    teacher[1, :, 0, 0] = 0  # a padded pixel of image 1
    teacher[0] = torch.stack([teacher[0, 0] + teacher[0, 2], teacher[0, 1], teacher[0, 2] * 0])  # class 2 absent
    for T in (1.0, 4.0):
        kls = []
        for n in range(2):
            keep = teacher[n].sum(0).flatten() > 0.5
            for c in range(3):
                if teacher[n, c].flatten()[keep].sum() < 1.0:  # min_pixels below: a class absent here
                    continue
                t = np.log(teacher[n, c].flatten().numpy().clip(1e-12))[keep.numpy()] / T
                s = torch.log_softmax(student[n], 0)[c].flatten().numpy()[keep.numpy()] / T
                pt, ps = np.exp(t - t.max()) / np.exp(t - t.max()).sum(), np.exp(s - s.max()) / np.exp(s - s.max()).sum()
                kls.append((pt * np.log(pt / ps)).sum())
        assert len(kls) < 6
        got = float(channel_kd_loss(student, teacher, T, min_pixels=1.0))
        assert math.isclose(got, np.mean(kls) * T * T, rel_tol=1e-4), T
    assert float(channel_kd_loss(student, torch.zeros_like(teacher), 2.0, min_pixels=1.0)) == 0.0  # nothing labelled: zero, not NaN
    same = torch.log(teacher.clamp_min(1e-12)) + 3.0  # logits: log-probs up to a per-pixel constant
    assert float(channel_kd_loss(same, teacher, 2.0, min_pixels=1.0)) < 1e-5  # a student that copies the teacher: no loss


def test_student_loss_picks_the_kd_loss_by_kind():
    from workbench.distillation.student import make_kd_loss
    from workbench.training.losses import channel_kd_loss

    torch.manual_seed(4)
    logits = torch.randn(2, 3, 4, 5)
    soft = torch.softmax(torch.randn(2, 4, 5, 3), -1)  # 20 pixels: classes with >= 16 pixels of mass are rare
    soft[0, :, :, 0] = 1.0
    soft[0, :, :, 1:] = 0.0
    assert float(channel_kd_loss(logits, soft.permute(0, 3, 1, 2), 4.0)) > 0
    want = 0.5 * float(channel_kd_loss(logits, soft.permute(0, 3, 1, 2), 4.0)) + 1.0
    got = float(make_kd_loss(4.0, 0.5, "additive", "channel")(logits, {"soft": soft}, torch.tensor(1.0)))
    assert math.isclose(got, want, rel_tol=1e-6)


def test_channel_kd_loss_equals_the_all_pairs_reference_in_value_and_gradient():
    """Computing the spatial softmaxes only for the classes the teacher puts in each image gives the
    same loss and the same gradient as computing them for all classes and dropping the absent ones."""
    from analysis.time_kd import channel_kd_all_pairs
    from workbench.training.losses import channel_kd_loss

    torch.manual_seed(5)
    logits = torch.randn(3, 6, 12, 10)
    teacher = torch.softmax(torch.randn(3, 6, 12, 10) * 3, 1)
    teacher[0, 4:] = 0  # classes 4, 5 absent from image 0
    teacher[0, 0] += 1 - teacher[0].sum(0)
    teacher[2, :, :3] = 0  # padding rows of image 2
    for T in (1.0, 2.0):
        a = logits.clone().requires_grad_(True)
        b = logits.clone().requires_grad_(True)
        got = channel_kd_loss(a, teacher, T, min_pixels=4.0)
        want = channel_kd_all_pairs(b, teacher, T, 4.0)
        got.backward()
        want.backward()
        assert math.isclose(float(got.detach()), float(want.detach()), rel_tol=1e-5), T
        assert torch.allclose(a.grad, b.grad, atol=1e-7, rtol=1e-4), T


def test_kd_timing_script_runs_at_tiny_sizes(capsys):
    from analysis.time_kd import main

    assert main(["--classes", "4", "--size", "32", "--crop", "16", "--batch", "2", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "present classes only" in out and "with soft labels" in out
