"""Tiny end to end: two 1-epoch teacher families on tiny images -> distill (--cv) -> export ->
inference.py uses the exported file alone."""

import json

import cv2
import numpy as np
import pytest

from conftest import tiny_overrides
from workbench import config
from workbench.data import load_dataset
from workbench.distill_run import run as distill
from workbench.distillation import DistillError, collect_teachers
from workbench.folds import split_for
from workbench.modelfile import read_metadata
from workbench.training import fit

FOLDS = [0, 1]


def train_teacher(data, runs, name, arch, fold):
    cfg = config.resolve(tiny_overrides(data, runs / name / f"fold{fold}", name=name, family=name, arch=arch,
                                        fold=fold, max_steps=2))
    ds = load_dataset(cfg["data"], cfg["image_size"])
    tr, va, folds_file = split_for(cfg, ds)
    fit(cfg, ds, tr, va, meta_extra={"folds_file": str(folds_file)})


@pytest.fixture
def teachers(tiny_data, tmp_path):
    runs = tmp_path / "runs"
    for fold in FOLDS:
        train_teacher(tiny_data, runs, "ta", "unet", fold)
        train_teacher(tiny_data, runs, "tb", "fpn", fold)
    return runs


def test_missing_teacher_fold_is_reported(teachers):
    with pytest.raises(DistillError, match="teacher tb fold 2 .*python train.py recipe=tb fold=2"):
        collect_teachers(["ta", "tb"], [0, 1, 2], teachers)


def test_distill_export_and_infer(tiny_data, teachers, tmp_path):
    export = tmp_path / "weights" / "student.safetensors"
    args = tiny_overrides(tiny_data, tmp_path / "unused", name="student", teachers="[ta,tb]",
                          teacher_folds="[0,1]", export=export, max_steps=2)
    assert distill(args, cv=True, runs_dir=teachers) == 0

    meta = read_metadata(export)
    assert meta["schema"]["hflip_pairs"] == [["left_light", "right_light"]]
    assert {t["name"] for t in meta["teachers"]} == {"ta", "tb"} and len(meta["teachers"]) == 4
    assert set(meta["tta"]) >= {"hflip"} and "min_area" in meta["cleanup"]
    assert meta["weights_dtype"] == "float16" and meta["training_data"]["images"] == 12
    report = json.loads((teachers / "student" / "oof_report.json").read_text())
    rows = report["rows"]
    assert {"ta fold0", "tb fold1", "family ta", "family tb", "ensemble (mean)", "student (--cv)"} <= set(rows)
    soft = list((teachers / "student" / "cache").glob("soft_*.npy"))
    assert len(soft) == 1 and np.load(soft[0], mmap_mode="r").shape == (12, 64, 64, 5)

    # the cache is reused, and keyed by the teachers' files
    assert distill(args, cv=False, runs_dir=teachers) == 0
    assert len(list((teachers / "student" / "cache").glob("soft_*.npy"))) == 1

    from workbench.inference_cli import main as infer
    out = tmp_path / "pred"
    assert infer(["--input", str(tiny_data / "images"), "--output", str(out), "--weights", str(export)]) == 0
    for img in (tiny_data / "images").glob("*.jpg"):
        pred = cv2.imread(str(out / f"{img.stem}.png"), cv2.IMREAD_UNCHANGED)
        assert pred.shape == (48, 56) and set(np.unique(pred)) <= {0, 10, 20, 30, 40}
