"""Paired bootstrap of an mIoU difference on constructed confusion matrices."""

import numpy as np

from workbench.evaluation.bootstrap import paired_bootstrap


def per_image(correct: np.ndarray, total: int = 100) -> np.ndarray:
    """(N, 2, 2) confusion matrices of images whose class-1 pixels are ``correct[i]`` of ``total`` right."""
    cms = np.zeros((len(correct), 2, 2), dtype=np.int64)
    cms[:, 0, 0] = 1000
    cms[:, 1, 1] = correct
    cms[:, 1, 0] = total - correct
    return cms


def test_a_clear_improvement_is_significant_and_identical_models_are_not():
    rng = np.random.default_rng(0)
    base = rng.integers(50, 80, 60)
    a, better = per_image(base), per_image(base + 10)
    result = paired_bootstrap(a, better, samples=500)
    assert result.delta > 0 and result.low > 0 and result.significant
    same = paired_bootstrap(a, a, samples=500)
    assert same.delta == 0 and same.low == 0 == same.high and not same.significant


def test_noise_without_a_trend_is_not_significant():
    rng = np.random.default_rng(1)
    base = rng.integers(40, 60, 40)
    noisy = np.clip(base + rng.integers(-15, 16, 40), 0, 100)
    noisy = noisy - (noisy.sum() - base.sum()) // 40  # same total: no real difference
    result = paired_bootstrap(per_image(base), per_image(noisy), samples=1000)
    assert result.low < 0 < result.high and "95 % interval" in str(result)


def test_per_class_intervals_show_a_class_that_got_worse_under_a_better_mean():
    """3 classes: B gains a lot on class 1 and loses a little but consistently on class 2."""
    rng = np.random.default_rng(2)
    n = 50
    cms_a = np.zeros((n, 3, 3), dtype=np.int64)
    cms_a[:, 0, 0] = 1000
    cms_a[:, 1, 1] = rng.integers(40, 60, n)
    cms_a[:, 1, 0] = 100 - cms_a[:, 1, 1]
    cms_a[:, 2, 2] = 90
    cms_a[:, 2, 0] = 10
    cms_b = cms_a.copy()
    cms_b[:, 1, 1] += 30
    cms_b[:, 1, 0] -= 30
    cms_b[:, 2, 2] -= 5
    cms_b[:, 2, 0] += 5
    r = paired_bootstrap(cms_a, cms_b, samples=500)
    assert r.low > 0  # better on the mean
    np.testing.assert_allclose(r.iou_b[2] - r.iou_a[2], 85 / 100 - 90 / 100)
    assert r.class_high[2] < 0 < r.class_low[1]  # class 2 worse, class 1 better, both beyond noise


def test_cli_prints_the_difference_and_the_per_class_table(tmp_path, capsys):
    import cv2

    from analysis.bootstrap import main

    gt, pa, pb = (tmp_path / d for d in ("gt", "a", "b"))
    for d in (gt, pa, pb):
        d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        mask = np.zeros((32, 32), np.uint8)
        mask[4:20, 4:28] = 32   # front door
        mask[22:28, 6:12] = 160  # door handle
        worse = mask.copy()
        worse[4:20, 4:4 + int(rng.integers(8, 14))] = 0  # A misses part of the door
        cv2.imwrite(str(gt / f"{i}.png"), mask)
        cv2.imwrite(str(pa / f"{i}.png"), worse)
        cv2.imwrite(str(pb / f"{i}.png"), mask)
    assert main(["--a", str(pa), "--b", str(pb), "--gt", str(gt), "--samples", "200"]) == 0
    out = capsys.readouterr().out
    assert "B is better" in out and "minus A" in out
    assert "front_door" in out and "door_handle" in out and "+0.0" in out
