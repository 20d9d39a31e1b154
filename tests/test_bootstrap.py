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
