"""Files written before the stage sub-packages still work: a model file loads and predicts as it did,
and an interrupted run resumes and ends exactly as the old code ended it.

The fixtures (tests/fixtures/, made by make_old_run.py with the code of commit 0ef263b): an fp16
model file, and a tiny run interrupted after epoch 1 of 2 (last.pt, metrics.json, config.yaml, on its
own tiny dataset, paths relative to the folder), plus what the old code wrote when it resumed it.
"""

from __future__ import annotations

import json
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.core import config
from workbench.data.dataset import load_dataset
from workbench.data.folds import split_for
from workbench.inference.predictor import Predictor
from workbench.models.modelfile import load_model, read_metadata
from workbench.training import fit
from workbench.training.checkpoint import config_changes
from workbench.training.launch import LAUNCH_KEYS

FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "old_run_expected.json").read_text())
# The old run's command line (make_old_run.py), without the max_steps=2 that interrupted it.
OLD_ARGS = ["data=data", "out=run", "folds_file=folds.json", "name=old", "arch=unet", "encoder=test_efficientnet",
            "encoder_weights=none", "decoder_channels=[2,2,2,2,2]", "image_size=32", "batch_size=2", "epochs=2",
            "folds=2", "fold=0", "warmup_epochs=0", "augment=flip", "precision=fp32", "threads=1"]
TIMING = {"seconds", "images_per_s", "train_minutes"}  # wall-clock fields differ from run to run
ADDED = {"provenance",  # recorded since (issue 17 §6): commit, versions, hardware, command, wall time
         "head_scale", "deep_supervision",  # UNet decoder options (issue 11), model file and recipe, defaults
         "kd_mix", "kd_loss",  # KD loss options (campaign 2's KD sweep), defaults convex and pixel
         "cv_folds",  # the folds distill.py --cv cross-validates (campaign 2), default [] = teacher_folds
         "twin",  # the recipe whose fold-k run is the student's twin (campaign 2, session 7), default ''
         "workers", "val_every",  # DataLoader processes and validation interval (session 8), defaults 0 and 1
         "kd_targets",  # cached soft labels or the teachers run on each augmented batch (session 14), default cached
         "folds_seed",  # the k-fold split's own seed (session 16), default -1 = seed
         "exclusive_parts",  # candidate groups of parts one photo shows at most one of (session 18), default []
         "init_from",  # a model file whose weights start the run (session 20), default ''
         "postprocess",  # distill.py chooses the post-processing, or leaves it for --postprocess (session 21), default true

         *LAUNCH_KEYS}  # config keys of the fold launcher (issue 18), in the recipe with their defaults


def assert_same(got, want, path="", tol=1e-6):
    """Equal JSON-like values; floats within ``tol``; timing fields only present."""
    if isinstance(want, dict):
        keys = [k for k in got if k not in ADDED] if isinstance(got, dict) else None
        assert keys == list(want), f"{path}: keys {keys} != {list(want)}"
        for k in want:
            if k not in TIMING:
                assert_same(got[k], want[k], f"{path}.{k}", tol)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{path}: {got} != {want}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{path}[{i}]", tol)
    elif isinstance(want, float) and not isinstance(got, bool):
        assert isinstance(got, (int, float)) and (math.isclose(got, want, rel_tol=tol, abs_tol=tol)
                                                  or (math.isnan(got) and math.isnan(want))), f"{path}: {got} != {want}"
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


def test_old_model_file_loads_and_predicts_as_before():
    path = FIXTURES / "old_model_fp16.safetensors"
    meta = read_metadata(path)
    assert meta["weights_dtype"] == "float16" and meta["encoder"] == "test_efficientnet"
    model, _ = load_model(path)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    predictor = Predictor(path, "cpu")
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    probs = predictor.forward(images)
    want = EXPECTED["predictor"]
    np.testing.assert_allclose(probs.mean((0, 2, 3)), want["class_means"], atol=1e-6)
    assert (probs.argmax(1) == np.array(want["labels"])).mean() > 0.999


def test_old_checkpoint_resumes_and_ends_as_the_old_code_did(tmp_path, monkeypatch):
    with tarfile.open(FIXTURES / "old_run.tar.xz") as tar:
        tar.extractall(tmp_path, filter="data")
    monkeypatch.chdir(tmp_path)
    old = torch.load("run/last.pt", map_location="cpu", weights_only=True)
    assert set(old) == {"model", "optimizer", "scheduler", "config", "state"} and json.loads(old["state"])["epoch"] == 1
    cfg = config.resolve(OLD_ARGS)
    assert config_changes(old["config"], cfg) == []  # keys added since (family_max_gap, ...) hold their defaults

    threads = torch.get_num_threads()
    try:
        ds = load_dataset(cfg["data"], cfg["image_size"])
        train_idx, val_idx, folds_file = split_for(cfg, ds)
        metrics = fit(cfg, ds, train_idx, val_idx, meta_extra={"folds_file": str(folds_file)})
    finally:
        torch.set_num_threads(threads)

    assert [h["epoch"] for h in metrics["history"]] == [1, 2] and metrics["finished"]
    assert_same(metrics, EXPECTED["metrics"])
    assert_same(json.loads(Path("run/metrics.json").read_text()), EXPECTED["metrics"])
    assert_same(read_metadata("run/model.safetensors"), EXPECTED["model_meta"])
    assert "git_commit" in metrics["provenance"] and "git_commit" in read_metadata("run/model.safetensors")["provenance"]
    assert json.loads(Path("run/oof.json").read_text()) == EXPECTED["oof"]
    new = torch.load("run/last.pt", map_location="cpu", weights_only=True)
    assert set(new) == set(old) and json.loads(new["state"])["epoch"] == 2
    # run again: nothing to do
    assert fit(cfg, ds, train_idx, val_idx)["history"] == metrics["history"]


def test_a_changed_setting_that_cannot_resume_is_named():
    old = config.resolve([])
    old.pop("family_max_gap")  # a key the old code did not know: unchanged while it holds its default
    assert config_changes(old, config.resolve(["epochs=20"])) == []
    assert config_changes(old, config.resolve(["decoder_lr_mult=2", "epochs=20"])) == ["decoder_lr_mult"]
