"""analysis.probe_convergence: the same batches through several variants, the markdown table of
quarter means and the per-step JSON, on the tiny synthetic dataset (seconds); bad variants fail with
one error line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from analysis import probe_convergence as probe
from conftest import REPO, tiny_overrides
from workbench.core import config
from workbench.data.dataset import load_dataset
from workbench.data.folds import split_for
from workbench.training.trainer import Trainer

HS4 = "unet_hs4: arch=unet head_scale=4 decoder_lr_mult=5"
HS4_DS = "unet_hs4_ds: arch=unet head_scale=4 decoder_lr_mult=5 deep_supervision=[0.5, 0.25]"


def tiny_args(data, *extra) -> list[str]:
    return ["encoder=tf_efficientnet_lite0", "encoder_weights=none", "folds=3", f"folds_file={data.parent / 'folds.json'}",
            "--data", str(data), "--image-size", "64", "--crop-size", "32", *extra]


def table_rows(text: str) -> dict[str, list[str]]:
    rows = [ln for ln in text.splitlines() if ln.startswith("| ")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in ln.strip("|").split("|")] for ln in rows)}


def test_probe_table_and_json(tiny_data, tmp_path, capsys):
    out = tmp_path / "probe.json"
    assert probe.main(tiny_args(tiny_data, "--steps", "4", "--variant", HS4, "--variant", HS4_DS,
                                "--out", str(out))) == 0
    printed = capsys.readouterr().out
    rows = table_rows(printed)
    assert rows["variant"] == ["1", "2", "3", "4"]  # fewer steps than quarters: one column per step
    assert set(rows) == {"variant", "unet_hs4", "unet_hs4_ds"}
    assert "Single seed (seed=0)" in printed and "4 batches of 8 random 32² crops of 64² images" in printed

    report = json.loads(out.read_text())
    assert report["steps"] == 4 and report["crop_size"] == 32 and report["ranges"] == [[1, 1], [2, 2], [3, 3], [4, 4]]
    assert report["train_images"] == 8  # 12 images, fold 0 of 3 held out
    by_name = {v["name"]: v for v in report["variants"]}
    assert list(by_name) == ["unet_hs4", "unet_hs4_ds"]
    for v in by_name.values():
        assert len(v["losses"]) == 4 and all(np.isfinite(v["losses"])) and v["skipped"] == 0
        assert v["quarters"] == pytest.approx(v["losses"])
        assert rows[v["name"]] == [f"{x:.2f}" for x in v["quarters"]]
        assert v["config"]["encoder"] == "tf_efficientnet_lite0" and v["config"]["head_scale"] == 4
    assert by_name["unet_hs4_ds"]["config"]["deep_supervision"] == [0.5, 0.25]
    plain, ds = by_name["unet_hs4"]["losses"], by_name["unet_hs4_ds"]["losses"]
    # Same initialisation and first batch: the first step's reported loss is the main output's only
    # (the auxiliary heads are built after the rest); afterwards their gradients make a difference.
    assert ds[0] == pytest.approx(plain[0], abs=1e-6)
    assert ds[1:] != pytest.approx(plain[1:], abs=1e-6)


def test_quarters_of_160_steps():
    ranges = probe.quarter_ranges(160)
    assert ranges == [(1, 40), (41, 80), (81, 120), (121, 160)]
    assert probe.quarter_means(list(range(1, 161)), ranges) == [20.5, 60.5, 100.5, 140.5]
    assert probe.quarter_means([1.0, float("nan"), 3.0, 5.0], [(1, 2), (3, 4)]) == [1.0, 4.0]  # non-finite left out
    assert probe.quarter_ranges(6) == [(1, 1), (2, 3), (4, 4), (5, 6)]
    table = probe.markdown_table([{"name": "a", "quarters": [3.3249, float("nan")]}], [(1, 40), (41, 80)])
    assert table.splitlines() == ["| variant | 1–40 | 41–80 |", "|---|---:|---:|", "| a | 3.32 | n/a |"]


def test_default_variants_take_the_shared_settings(tiny_data, tmp_path, capsys):
    out = tmp_path / "probe.json"
    assert probe.main(tiny_args(tiny_data, "--steps", "1", "--limit-images", "4", "batch_size=2", "--out", str(out))) == 0
    rows = table_rows(capsys.readouterr().out)
    assert list(rows) == ["variant", "fpn", "unet", "unet_hs4", "unet_hs4_ds"] and rows["variant"] == ["1"]
    report = json.loads(out.read_text())
    assert report["train_images"] == 4 and report["batch_size"] == 2
    assert {v["config"]["encoder"] for v in report["variants"]} == {"tf_efficientnet_lite0"}
    assert report["variants"][0]["config"]["decoder_channels"] == [128, 64]


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")  # no optimiser step taken
def test_the_batches_are_the_first_batches_of_a_training_run(tiny_data, tmp_path):
    """The probe's stream is what train.py feeds its first steps (same split, augmentation, shuffling, seeds)."""
    cfg = config.resolve(tiny_overrides(tiny_data, tmp_path / "run", crop_size=32, seed=3, threads=0))
    ds = load_dataset(cfg["data"], cfg["image_size"])
    train_idx, _, _ = split_for(cfg, ds)
    trainer = Trainer(cfg, ds, train_idx, [])
    trainer.build()
    trainer.state = {"step": 0}
    seen = []
    trainer.train_step = lambda batch: seen.append(batch) or 1.0
    for epoch in (1, 2):
        trainer.train_epoch(epoch)
    stream = probe.batch_stream(cfg, ds, train_idx, len(seen))
    assert len(seen) == 4  # 8 training images, batches of 4, two epochs
    for a, b in zip(seen, stream):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"].long())


@pytest.mark.parametrize("variant, needles", [
    ("arch=fpn", ["--variant 'arch=fpn': expected 'name: key=value ...'"]),
    ("x: arch=fpn nosuchkey=1", ["--variant 'x'", "unknown key 'nosuchkey'"]),
    ("x: head_scale=3", ["--variant 'x'", "head_scale=3"]),
    ("x: lr=fast", ["--variant 'x'", "lr='fast'"]),
    ("x: crop_size=64", ["--variant 'x'", "crop_size is shared by every variant", "--crop-size"]),
    ("x: seed=1", ["--variant 'x'", "seed is shared by every variant"]),
    ("x: epochs=3", ["--variant 'x'", "epochs= has no effect"]),
    ("x: arch=fpn head_scale=4", ["--variant 'x'", "head_scale=4 is for arch=unet"]),
    ("x: arch=fpn deep_supervision=[0.5]", ["--variant 'x'", "deep_supervision is for arch=unet"]),
])
def test_bad_variant_is_one_error_line(tiny_data, variant, needles, capsys):
    assert probe.main(tiny_args(tiny_data, "--steps", "1", "--variant", variant)) == 2
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_bad_variant_on_the_command_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "analysis.probe_convergence", "--steps", "4",
                        "--variant", "a: arch=unet", "--variant", "a: arch=fpn"], cwd=tmp_path,
                       env=dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert re.fullmatch(r"error: --variant 'a' is given twice; give each variant its own name\n", r.stderr), r.stderr
    assert not (tmp_path / "runs").exists()


def test_help_names_what_it_measures(capsys):
    with pytest.raises(SystemExit) as exit_:
        probe.main(["--help"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    assert "usage: python -m analysis.probe_convergence" in printed and "How to read it" in printed
