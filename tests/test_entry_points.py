"""Every command a user runs reports a bad argument the same way - one ``error:`` line on stderr, no
traceback, exit status 2 - and prints its usage for ``--help`` (exit status 0)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO

PY = sys.executable
COMMANDS = {  # name -> (command, a bad argument)
    "train.py": ([PY, "train.py"], ["nosuchkey=1"]),
    "distill.py": ([PY, "distill.py"], ["nosuchkey=1"]),
    "inference.py": ([PY, "inference.py"], ["--input", "in", "--output", "out", "--no-such-flag"]),
    "workbench.coco": ([PY, "-m", "workbench.coco"], ["--coco", "x.json", "--no-such-flag"]),
    "analysis.report": ([PY, "-m", "analysis.report"], ["--pred", "p", "--no-such-flag"]),
    "analysis.compare": ([PY, "-m", "analysis.compare"], ["--a", "a", "--no-such-flag"]),
    "analysis.error_map": ([PY, "-m", "analysis.error_map"], ["--out", "o", "--no-such-flag"]),
    "analysis.campaign_summary": ([PY, "-m", "analysis.campaign_summary"], ["--no-such-flag"]),
    "analysis.runs": ([PY, "-m", "analysis.runs"], ["--no-such-flag"]),
    "analysis/benchmark_inference.py": ([PY, "analysis/benchmark_inference.py"], ["--big-size", "huge"]),
    "analysis.bootstrap": ([PY, "-m", "analysis.bootstrap"], ["--a", "a", "--b", "b", "--no-such-flag"]),
    "analysis.oof_table": ([PY, "-m", "analysis.oof_table"], ["r", "--out", "t.npz", "--no-such-flag"]),
    "analysis.exclusive_parts": ([PY, "-m", "analysis.exclusive_parts"], ["r", "--data", "d", "--group", "a", "b",
                                                                     "--no-such-flag"]),
    "analysis.profile_training": ([PY, "-m", "analysis.profile_training"], ["--no-such-flag"]),
    "analysis.probe_convergence": ([PY, "-m", "analysis.probe_convergence"], ["--no-such-flag"]),
}
ENV = dict(os.environ, HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1", OMP_NUM_THREADS="1")


def run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_bad_argument_is_one_error_line_and_exit_2(name):
    command, bad = COMMANDS[name]
    r = run(command + bad)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert [ln for ln in lines if "error:" in ln] == [lines[0]] and lines[0].startswith("error: "), r.stderr


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_prints_usage_and_exits_0(name):
    r = run(COMMANDS[name][0] + ["--help"])
    assert r.returncode == 0, r.stderr
    assert "usage" in r.stdout.lower() or "python" in r.stdout, r.stdout
    assert "Traceback" not in r.stderr
