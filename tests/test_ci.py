"""The CI rule on skipped tests (tests/conftest.py, CARPARTS_CI=1 from .ci/run): the count is always
printed, and a dataset test that skipped while the dataset is present, or a browser test that
skipped, fails the run."""

import os
import subprocess
import sys

import pytest

from conftest import REPO, forbidden_skips


def test_which_skips_ci_refuses():
    skips = [("a", "Skipped: DSMLR data not found at ../shared/datasets/dsmlr-carparts"),
             ("b", "Skipped: chromium not installed (apt-get install -y chromium)"),
             ("c", "Skipped: root can write to read-only folders"),
             ("d", "Skipped: shared DSMLR data set absent")]
    assert [n for n, _ in forbidden_skips(skips, dataset_present=True)] == ["a", "b", "d"]
    assert [n for n, _ in forbidden_skips(skips, dataset_present=False)] == ["b"]


def test_probe():
    """Passes, except when test_ci_fails_on_a_refused_skip runs it as a skipping browser test."""
    if os.environ.get("CARPARTS_CI_PROBE") == "1":
        pytest.skip("chromium not installed (probe)")


def test_ci_fails_on_a_refused_skip():
    env = dict(os.environ, CARPARTS_CI="1", CARPARTS_CI_PROBE="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_ci.py::test_probe"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert "skipped tests: 1" in r.stdout
    assert r.returncode == 1 and "CI error: tests/test_ci.py::test_probe skipped" in r.stdout
