"""Tiny end to end: two 1-epoch teacher families on tiny images -> distill (--cv) -> export ->
inference.py uses the exported file alone; the fold protocol, the caches and the twin."""

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import tiny_overrides
from workbench.core import config
from workbench.data import load_dataset
from workbench.distillation.pipeline import run as distill
from workbench.distillation.teachers import collect_teachers, held_out_stems
from workbench.evaluation.metrics import confusion_from_probs, iou_per_class
from workbench.evaluation.oof_table import load_table
from workbench.inference.tta import merge_views
from workbench.training.oof import load_oof
from workbench.exceptions import DistillError
from workbench.data.folds import split_for
from workbench.models.modelfile import read_metadata
from workbench.training import fit

FOLDS = [0, 1]


def train_teacher(data, runs, name, arch, fold, family=None):
    cfg = config.resolve(tiny_overrides(data, runs / name / f"fold{fold}", name=name, family=family or name, arch=arch,
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


def student_args(tiny_data, tmp_path, export, **extra):
    return tiny_overrides(tiny_data, tmp_path / "unused", name="student", teachers="[ta,tb]", teacher_folds="[0,1]",
                          export=export, max_steps=2, family_max_gap=1.0, crop_size=0,
                          decoder_channels="[]", **extra)


def test_missing_teacher_fold_is_reported(teachers):
    with pytest.raises(DistillError, match="teacher tb fold 2 .*python train.py recipe=tb fold=2"):
        collect_teachers(["ta", "tb"], [0, 1, 2], teachers)


def test_distill_export_and_infer(tiny_data, teachers, tmp_path):
    export = tmp_path / "weights" / "student.safetensors"
    args = student_args(tiny_data, tmp_path, export)
    assert distill(args, cv=True, runs_dir=teachers) == 0

    meta = read_metadata(export)
    assert meta["schema"]["hflip_pairs"] == [["left_light", "right_light"]]
    assert {t["name"] for t in meta["teachers"]} == {"ta", "tb"} and len(meta["teachers"]) == 4
    assert set(meta["tta"]) >= {"hflip"} and "min_area" in meta["cleanup"]
    assert meta["weights_dtype"] == "float16" and meta["training_data"]["images"] == 12
    report = json.loads((teachers / "student" / "oof_report.json").read_text())
    rows = report["rows"]
    assert {"ta fold0", "tb fold1", "family ta", "family tb", "ensemble (mean)", "twin (hard labels)",
            "student (KD)", "twin fold0", "student fold1"} <= set(rows)
    assert "fold-k teachers" in report["protocol"]
    # the student's twin has the student's training settings: the unet teacher "ta" is reused as the twin
    assert report["cv"]["0"]["twin"].endswith("ta/fold0")
    caches = sorted((teachers / "student" / "cache").glob("soft_*.npy"))
    assert len(caches) == 3  # fold 0, fold 1, all images
    shapes = sorted(np.load(c, mmap_mode="r").shape for c in caches)
    assert shapes[-1] == (12, 64, 64, 5) and all(np.load(c, mmap_mode="r").dtype == np.float16 for c in caches)
    info = json.loads(caches[0].with_suffix(".json").read_text())
    assert info["kind"] == "log_probs" and info["dtype"] == "float16" and info["temperature"] == 1.0

    # the caches are reused, and keyed by the teachers' files
    assert distill(args, cv=False, runs_dir=teachers) == 0
    assert len(list((teachers / "student" / "cache").glob("soft_*.npy"))) == 3

    from workbench.inference.cli import main as infer
    out = tmp_path / "pred"
    assert infer(["--input", str(tiny_data / "images"), "--output", str(out), "--weights", str(export)]) == 0
    for img in (tiny_data / "images").glob("*.jpg"):
        pred = cv2.imread(str(out / f"{img.stem}.png"), cv2.IMREAD_UNCHANGED)
        assert pred.shape == (48, 56) and set(np.unique(pred)) <= {0, 10, 20, 30, 40}


def test_fold_soft_labels_never_come_from_a_teacher_that_trained_on_the_fold(tiny_data, teachers, tmp_path):
    args = student_args(tiny_data, tmp_path, tmp_path / "s.safetensors")
    assert distill(args, cv=True, final=False, runs_dir=teachers) == 0
    ds = load_dataset(tiny_data, 64)
    cfg = config.resolve(args)
    for cache in (teachers / "student" / "cache").glob("soft_*.json"):
        info = json.loads(cache.read_text())
        students_images = set(info["stems"])
        fold = {t["fold"] for t in info["teachers"]}
        assert len(fold) == 1  # one fold's teachers only
        _, val_idx, _ = split_for(dict(cfg, fold=fold.pop()), ds)
        val = {ds.stems[i] for i in val_idx}
        assert not students_images & val  # the student of fold k never sees fold k
        for t in collect_teachers(["ta", "tb"], FOLDS, teachers):
            if any(x["file"] == str(t.model_file) for x in info["teachers"]):
                assert held_out_stems(t, ds, str(tiny_data)) == val  # ... and neither did its teachers


def test_caches_are_rebuilt_from_the_teacher_files(tiny_data, teachers, tmp_path):
    args = student_args(tiny_data, tmp_path, tmp_path / "s.safetensors")
    assert distill(args, cv=True, final=False, runs_dir=teachers) == 0
    caches = {c.name: np.load(c).astype(np.float32) for c in (teachers / "student" / "cache").glob("soft_*.npy")}
    for f in list(teachers.glob("t?/fold*/oof*")) + list((teachers / "student" / "cache").glob("soft_*")):
        f.unlink()
    assert distill(args, cv=True, final=False, runs_dir=teachers) == 0
    for t in ("ta", "tb"):
        for fold in FOLDS:
            assert (teachers / t / f"fold{fold}" / "oof_probs.npy").exists()
    rebuilt = {c.name: np.load(c).astype(np.float32) for c in (teachers / "student" / "cache").glob("soft_*.npy")}
    assert rebuilt.keys() == caches.keys()
    for k in caches:
        np.testing.assert_allclose(rebuilt[k], caches[k], atol=0.05)


def test_cv_folds_select_the_students_cv_and_the_final_learns_from_every_teacher(tiny_data, teachers, tmp_path):
    export = tmp_path / "s.safetensors"
    with pytest.raises(DistillError, match=r"cv_folds \[2\] are not in teacher_folds"):
        distill(student_args(tiny_data, tmp_path, export, cv_folds="[2]"), cv=True, runs_dir=teachers)
    assert distill(student_args(tiny_data, tmp_path, export, cv_folds="[0]"), cv=True, runs_dir=teachers) == 0
    report = json.loads((teachers / "student" / "oof_report.json").read_text())
    assert list(report["cv"]) == ["0"] and "student fold0" in report["rows"] and "student fold1" not in report["rows"]
    saved = (teachers / "student" / "fold0" / "config.yaml").read_text()
    assert "teacher_folds:\n- 0\n" in saved  # student fold 0 learns from the fold-0 teachers only
    assert len(read_metadata(export)["teachers"]) == 4  # the final student from both folds' teachers


def test_a_hard_label_final_student_needs_no_soft_labels(tiny_data, teachers, tmp_path):
    export = tmp_path / "s.safetensors"
    assert distill(student_args(tiny_data, tmp_path, export, kd_weight=0), runs_dir=teachers) == 0
    meta = read_metadata(export)
    assert meta["teachers"] == [] and meta["distillation"]["kd_weight"] == 0
    assert not list((teachers / "student" / "cache").glob("soft_*.npy"))


def test_postprocess_false_skips_the_choice_and_leaves_it_to_distill_postprocess(tiny_data, teachers, tmp_path,
                                                                                monkeypatch):
    """``postprocess=false`` (a GPU lent for minutes): no post-processing is chosen on the CPU; the file
    gets flip TTA and no cleanup, and the report and the file say it was not chosen."""
    import workbench.distillation.pipeline as pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("post-processing was chosen")

    monkeypatch.setattr(pipeline, "choose_postprocessing", refuse)
    export = tmp_path / "s.safetensors"
    assert distill(student_args(tiny_data, tmp_path, export, kd_weight=0, postprocess="false"), runs_dir=teachers) == 0
    meta = read_metadata(export)
    assert meta["tta"] == {"hflip": True, "scales": [1.0]} and meta["cleanup"] == {"enabled": False, "min_area": {}}
    assert meta["exclusive"] == [] and meta["postprocessing_ablation"] == {}
    report = json.loads((teachers / "student" / "oof_report.json").read_text())
    assert report["postprocessing_chosen_on"] == "not chosen (postprocess=false)"
    assert "python distill.py --postprocess" in (teachers / "student" / "oof_report.md").read_text()


def test_online_targets_distil_without_a_soft_label_cache(tiny_data, teachers, tmp_path):
    """``kd_targets=online``: students of the CV and the final one learn from the teachers run on their
    batches; no soft labels are stored, and the report and the model file say how the student learned."""
    export = tmp_path / "s.safetensors"
    args = student_args(tiny_data, tmp_path, export, kd_targets="online", cv_folds="[0]")
    assert distill(args, cv=True, runs_dir=teachers) == 0
    assert not list((teachers / "student").glob("cache/soft_*.npy"))
    report = json.loads((teachers / "student" / "oof_report.json").read_text())
    assert report["settings"]["kd_targets"] == "online" and "student (KD)" in report["rows"]
    for view in ("soft_labels", "soft_labels_augmented"):  # previewed on the clean and on augmented training images
        assert 0 < report["cv"]["0"][view]["top1"] <= 1 and 0 <= report["cv"]["0"][view]["agreement_with_labels"] <= 1
    meta = read_metadata(export)
    assert meta["distillation"]["kd_targets"] == "online" and len(meta["teachers"]) == 4
    fold_meta = read_metadata(teachers / "student" / "fold0" / "model.safetensors")
    assert {t["fold"] for t in fold_meta["distillation"]["teachers"]} == {0}


def test_a_published_teacher_is_the_twin_on_a_machine_without_its_run(tiny_data, teachers, tmp_path, monkeypatch):
    """A new machine has only the published fp16 teacher files: the teacher whose saved config equals the
    student's hard-label settings is still the twin (its OOF rebuilt from the file), so no twin is retrained."""
    from workbench.distillation.teachers import publish
    monkeypatch.chdir(tmp_path)  # distill.py looks for published teachers in ./weights/teachers
    for name in ("ta", "tb"):
        for fold in FOLDS:
            publish(teachers / name / f"fold{fold}")
    runs = tmp_path / "fresh_runs"
    assert not runs.exists()
    assert distill(student_args(tiny_data, tmp_path, tmp_path / "s.safetensors", cv_folds="[0]"), cv=True,
                   final=False, runs_dir=runs) == 0
    report = json.loads((runs / "student" / "oof_report.json").read_text())
    assert report["cv"]["0"]["twin"] == str(runs / "ta" / "fold0")
    assert not (runs / "student_twin").exists()
    assert report["rows"]["twin fold0"]["images"] == report["rows"]["student fold0"]["images"] > 0


def test_the_twin_trained_in_the_precision_the_student_trains_in():
    """``precision: auto`` is fp32 on a CPU without native bf16 and bf16 on one with it (or on CUDA): a
    run trained elsewhere in another precision is not the twin; runs that did not record it ran fp32."""
    from workbench.distillation.student import find_twin_run

    cfg = config.resolve(["recipe=unet_effnet_ds"])
    teacher = (Path("runs/unet_effnet_ds/fold0"), dict(cfg), None)  # a campaign-2 run: unrecorded, fp32
    assert find_twin_run(dict(cfg, name="s_twin"), "fp32", [teacher]) == teacher[0]
    assert find_twin_run(dict(cfg, name="s_twin"), "bf16", [teacher]) is None
    here = (Path("runs/s_twin/fold0"), dict(cfg, precision="bf16"), "bf16")
    assert find_twin_run(dict(cfg, name="s_twin"), "bf16", [teacher, here]) == here[0]  # bf16 asked or auto
    assert find_twin_run(dict(cfg, epochs=32), "fp32", [teacher]) is None  # any other training setting


def test_post_processing_candidates_are_not_training_settings():
    """The student recipe's exclusive_parts only decide the exported file's post-processing: a
    teacher run without them is still the twin, and a checkpoint written without them resumes."""
    from workbench.distillation.student import find_twin_run
    from workbench.training.checkpoint import config_changes

    student = config.resolve(["recipe=student_unet"])
    assert student["exclusive_parts"] == [["tailgate", "trunk"]]
    teacher_cfg = config.resolve(["recipe=unet_effnet_ds"])
    teacher = (Path("runs/unet_effnet_ds/fold0"), dict(teacher_cfg), None)
    assert find_twin_run(dict(student, kd_weight=0), "fp32", [teacher]) == teacher[0]
    old = dict(student)
    old.pop("exclusive_parts")  # written before the key existed
    assert config_changes(old, student) == [] and config_changes(teacher_cfg, dict(teacher_cfg, exclusive_parts=[])) == []


def test_twin_names_the_recipe_whose_run_is_the_twin(tiny_data, teachers, tmp_path):
    """`twin=ta`: student fold k taught by tb alone is compared with ta's fold-k run, which trained with
    the student's settings (its OOF rebuilt if missing); a named run trained otherwise is an error."""
    for f in teachers.glob("ta/fold*/oof*"):
        f.unlink()
    args = student_args(tiny_data, tmp_path, tmp_path / "s.safetensors", cv_folds="[0]")
    args = [a for a in args if not a.startswith("teachers=")] + ["teachers=[tb]", "twin=ta"]
    assert distill(args, cv=True, final=False, runs_dir=teachers) == 0
    report = json.loads((teachers / "student" / "oof_report.json").read_text())
    assert report["cv"]["0"]["twin"] == str(teachers / "ta" / "fold0") and report["cv"]["0"]["teachers"] == ["tb fold0"]
    assert not (teachers / "student_twin").exists() and (teachers / "ta" / "fold0" / "oof_probs.npy").exists()
    with pytest.raises(DistillError, match="twin=tb: .* differs in arch"):
        distill(args[:-1] + ["twin=tb"], cv=True, final=False, runs_dir=teachers)


def test_report_only_writes_the_oof_table_and_trains_nothing(tiny_data, teachers, tmp_path):
    args = student_args(tiny_data, tmp_path, tmp_path / "s.safetensors")
    rng = np.random.default_rng(0)  # 2-step teachers predict nearly one class; random OOF views tell mixes apart
    for run in teachers.glob("t?/fold*"):
        for name in ("oof_probs.npy", "oof_probs_flip.npy"):
            shape = np.load(run / name, mmap_mode="r").shape
            np.save(run / name, rng.integers(0, 256, shape, dtype=np.uint8))
    assert distill(args, cv=False, final=False, runs_dir=teachers) == 0
    report = json.loads((teachers / "student" / "oof_report.json").read_text())
    assert {"family ta", "family tb", "ensemble (mean)"} <= set(report["rows"])
    best = max(("ta", "tb"), key=lambda f: report["rows"][f"family {f}"]["tta"]["miou"])
    assert report["postprocessing"]["ablation"]["tta"] == report["rows"][f"family {best}"]["tta"]
    # the teaching ensemble's per-image confusions, for a bootstrap of its lead: they sum to its row, and
    # each image's is the mean of both families' probabilities (flip TTA: of each family's two views)
    table = load_table(teachers / "student" / "teaching_ensemble_oof_table.npz")
    for key, confusion in (("tta", table.confusion), ("plain", table.confusion_plain)):
        assert report["rows"]["ensemble (mean)"][key]["miou"] == pytest.approx(np.nanmean(iou_per_class(confusion.sum(0))))
    assert table.tta and len(table.stems) == report["rows"]["ensemble (mean)"]["images"]
    cfg = config.resolve(args)
    ds = load_dataset(cfg["data"], cfg["image_size"])
    oofs = {(f, fold): load_oof(teachers / f / f"fold{fold}") for f in ("ta", "tb") for fold in FOLDS}
    for i, stem in enumerate(table.stems):
        views = [o.views(o.stems.index(stem)) for o in oofs.values() if stem in o.stems]
        assert len(views) == 2  # one held-out prediction per family
        mask = ds.full_masks[ds.stems.index(stem)]
        C, near = len(table.classes), mask.size // 1000  # float rounding may flip a near-tie pixel or two
        tta = confusion_from_probs([sum(merge_views(*v) for v in views) / 2], [mask], C)
        plain = confusion_from_probs([sum(v[0] for v in views) / 2], [mask], C)
        assert np.abs(table.confusion[i] - tta).sum() <= 2 * near and np.abs(table.confusion_plain[i] - plain).sum() <= 2 * near
    assert not (tmp_path / "s.safetensors").exists() and not list((teachers / "student").glob("fold*"))
    assert not (teachers / "student" / "full").exists()


def test_report_only_from_the_command_line(tiny_data, teachers, tmp_path, monkeypatch, capsys):
    import distill as entry
    monkeypatch.chdir(teachers.parent)  # distill.py's runs/ is ./runs
    args = student_args(tiny_data, tmp_path, tmp_path / "s.safetensors")
    assert entry.main(["--report-only", *args]) == 0
    assert not (tmp_path / "s.safetensors").exists()
    assert "Post-processing chosen on the OOF predictions of family" in (teachers / "student" / "oof_report.md").read_text()
    assert entry.main(["--report-only", "--cv", *args]) == 2
    assert "cannot be combined" in capsys.readouterr().err


def test_two_teachers_of_one_family_and_fold_are_refused(tiny_data, teachers):
    """A longer-trained run of a recipe carries its family's name; pooling both into one family's OOF
    would score some images twice and silently keep one of the two predictions."""
    train_teacher(tiny_data, teachers, "ta_long", "unet", 0, family="ta")
    with pytest.raises(DistillError, match="ta and ta_long are both family ta fold 0"):
        collect_teachers(["ta", "ta_long"], [0], teachers)
    assert len(collect_teachers(["ta_long", "tb"], [0], teachers)) == 2


def shipped_copy(run: Path, path: Path) -> Path:
    """A float16 export of a run's model, as distill.py ships one (float16, BatchNorm statistics in
    float32, integer counters), with one exclusive group in its metadata."""
    import torch

    from workbench.models.modelfile import load_model, save_model
    model, meta = load_model(run / "model.safetensors")
    save_model(path, model, dict(meta, exclusive=[["left_light", "right_light"]]), dtype=torch.float16)
    return path


def test_postprocess_rechooses_a_files_post_processing_on_more_folds_and_keeps_its_weights(
        tiny_data, teachers, tmp_path, capsys):
    """distill.py --postprocess: the choice on every fold of the file's recipe, cross-fitted, written
    into the metadata with what it was chosen on and what it replaced; the tensors byte for byte."""
    import torch
    from safetensors.torch import load_file

    import distill as entry
    from workbench.distillation.ensemble import gather_oof
    from workbench.distillation.postprocessing import choose_postprocessing
    from workbench.inference.predictor import Predictor

    rng = np.random.default_rng(1)  # 2-step teachers predict nearly one class: random OOF lets cleanup choose
    for run in teachers.glob("ta/fold*"):
        for name in ("oof_probs.npy", "oof_probs_flip.npy"):
            shape = np.load(run / name, mmap_mode="r").shape
            np.save(run / name, rng.integers(0, 256, shape, dtype=np.uint8))
    model = shipped_copy(teachers / "ta" / "fold0", tmp_path / "ship.safetensors")
    before, old, tensors = model.read_bytes(), read_metadata(model), load_file(str(model))

    assert entry.main(["--postprocess", str(model), str(teachers / "ta"), "--dry-run"]) == 0
    assert model.read_bytes() == before
    # the flag anywhere, a fold folder given with its run folder counts once
    assert entry.main(["--dry-run", str(model), "--postprocess", str(teachers / "ta" / "fold1"), str(teachers / "ta")]) == 0
    assert model.read_bytes() == before
    capsys.readouterr()
    assert entry.main(["--postprocess", str(model), str(teachers / "ta")]) == 0
    meta = read_metadata(model)
    ds = load_dataset(tiny_data, 64)
    # the file's own exclusive group is a candidate (the tiny recipe has none), and the rule decides it again
    expected = choose_postprocessing(gather_oof({"runs": [teachers / "ta" / f"fold{f}" for f in FOLDS]}, ds),
                                     ds.schema.names, "runs", exclusive=[[1, 2]])
    assert {k: meta[k] for k in ("tta", "exclusive", "cleanup")} == \
        {k: expected[k] for k in ("tta", "exclusive", "cleanup")}
    assert "cleanup_cross_fitted_gain_per_class_lowres" in meta["postprocessing_ablation"]
    chosen_on = meta["postprocessing_chosen_on"]
    assert chosen_on["folds"] == FOLDS and chosen_on["cross_fitted"] and chosen_on["images"] == 8  # 2 of 3 folds
    assert chosen_on["exclusive_candidates"] == [["left_light", "right_light"]]
    assert chosen_on["previous"] == {k: old[k] for k in ("tta", "exclusive", "cleanup")}
    assert {k: v for k, v in meta.items() if not k.startswith("postprocessing") and k not in expected} == \
        {k: v for k, v in old.items() if not k.startswith("postprocessing") and k not in expected}
    after = load_file(str(model))
    assert tensors.keys() == after.keys() and all(tensors[k].dtype == after[k].dtype and tensors[k].equal(after[k])
                                                  for k in tensors)
    assert {torch.float16, torch.float32, torch.int64} <= {v.dtype for v in after.values()}  # weights, BN, counters
    assert Predictor(model).meta["cleanup"] == meta["cleanup"]  # inference reads it with no other file
    out = capsys.readouterr().out
    assert "exclusive part groups tried: [['left_light', 'right_light']]" in out
    assert "tta: {'hflip': True, 'scales': [1.0]} -> {'hflip': False" in out
    # a second choice keeps the first one's record
    assert entry.main(["--postprocess", str(model), str(teachers / "ta" / "fold0")]) == 0
    again = read_metadata(model)["postprocessing_chosen_on"]
    assert not again["cross_fitted"] and again["previous"]["postprocessing_chosen_on"] == chosen_on


def test_postprocess_refuses_what_it_must_not_rewrite_or_choose_on(tiny_data, teachers, tmp_path, capsys):
    """Runs of another model, one fold given twice, nothing finished, a training run's own model
    file, unknown settings: one error line each, the file untouched; an unfinished fold is skipped."""
    import distill as entry
    from workbench.training.done import reopen

    model = shipped_copy(teachers / "ta" / "fold0", tmp_path / "ship.safetensors")
    before = model.read_bytes()
    twice = tmp_path / "again"
    shutil.copytree(teachers / "ta" / "fold0", twice / "fold0")
    cases = [([str(model), str(teachers / "tb")], "another model than .*\(arch.* differ: fpn/"),
             ([str(model), str(teachers / "ta" / "fold0"), str(twice)], "both hold out 4 images .* one run per fold"),
             ([str(model), str(tmp_path)], "no fold\\*/oof.json"),
             ([str(teachers / "ta" / "fold1" / "model.safetensors"), str(teachers / "ta")], "finished training run.* copy it first"),
             ([str(model), str(teachers / "ta"), "epochs=3"], "takes recipe=, data=, exclusive_parts= only"),
             ([str(model), str(teachers / "ta"), "exclusive_parts=[left_light]"], "exclusive_parts"),
             (["--bogus", str(model), str(teachers / "ta")], "unrecognized arguments")]
    for argv, message in cases:
        assert entry.main(["--postprocess", *argv]) == 2
        assert re.search(message, capsys.readouterr().err), message
    assert model.read_bytes() == before
    reopen(teachers / "ta" / "fold1")  # training on: its old OOF files stay, but it is not finished
    assert entry.main(["--postprocess", str(model), str(teachers / "ta")]) == 0
    assert "fold1: skipped, unfinished" in " ".join(capsys.readouterr().out.split())  # rich wraps lines
    assert read_metadata(model)["postprocessing_chosen_on"]["folds"] == [0]
    reopen(teachers / "ta" / "fold0")
    assert entry.main(["--postprocess", str(model), str(teachers / "ta")]) == 2
    assert "no finished fold" in capsys.readouterr().err
    assert entry.main(["--postprocess", "--help"]) == 0
    assert "--dry-run" in capsys.readouterr().out


def test_postprocess_candidates_come_from_the_command_line_the_recipe_or_the_file():
    from workbench.distillation.retune import candidate_groups

    tg = [["tailgate", "trunk"]]
    own = {"exclusive": [["hood", "trunk"]]}
    assert candidate_groups({}, {"exclusive_parts": tg}, None) == (tg, "the command line")
    assert candidate_groups({"recipe": {"recipe": "student_unet"}}, {}, None) == (tg, "recipe student_unet")
    assert candidate_groups({"recipe": {"recipe": "student_unet", "exclusive_parts": []}}, {}, None)[0] == []
    assert candidate_groups({"recipe": {"recipe": "gone"}}, {}, None)[1].startswith("none (the file's recipe 'gone'")
    groups, source = candidate_groups({"recipe": "not a mapping", **own}, {}, "student_unet")
    assert groups == tg + own["exclusive"] and source == "recipe student_unet and the file's own groups"
    assert candidate_groups(own, {}, None) == (own["exclusive"], "none (the file names no recipe) and the file's own groups")
