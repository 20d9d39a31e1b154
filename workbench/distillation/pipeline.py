"""The ``distill.py`` pipeline: teachers -> OOF report -> soft labels -> student (--cv) ->
post-processing choice -> export. Kept apart from :mod:`workbench.distillation`, which holds the
reusable pieces."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from . import config as config_mod
from .data import load_dataset
from .distillation import (DistillError, add_rows, choose_postprocessing, collect_teachers, dataset_digest, gather_oof,
                           make_kd_loss, oof_report, report_markdown, report_table, soft_labels)
from .folds import split_for
from .modelfile import load_model, save_model
from .training import console, fit


def run(argv: list[str], cv: bool = False, runs_dir: Path = Path("runs")) -> int:
    cfg = config_mod.resolve(argv, default_recipe="student")
    console.rule(f"distill {cfg['name']} from {cfg['teachers']} folds {cfg['teacher_folds']}")
    teachers = collect_teachers(cfg["teachers"], cfg["teacher_folds"], runs_dir)
    ds = load_dataset(cfg["data"], cfg["image_size"])
    schema = ds.schema
    if teachers[0].meta["schema"] != schema.to_dict():
        raise DistillError(f"teachers were trained on another schema than {cfg['data']}")
    folds_file = teachers[0].meta.get("folds_file", "")
    base = dict(cfg, folds_file=folds_file)
    work = runs_dir / cfg["name"]

    rows, oofs, weights = oof_report(teachers, ds)
    ens = rows.get("ensemble (OOF-fitted weights)")
    if ens is None or ens["tta"]["miou"] <= rows["ensemble (mean)"]["tta"]["miou"] + 0.002:
        weights = {f: 1.0 for f in oofs.plain}  # fitted weights must clearly help to be used
    console.print(f"soft-label ensemble weights: {weights}")
    soft = soft_labels(teachers, weights, ds, cfg["image_size"], work / "cache", cfg["device"])
    extra = make_kd_loss(cfg["temperature"], cfg["kd_weight"])

    student_runs = []
    if cv:
        for fold in cfg["teacher_folds"]:
            fcfg = dict(base, fold=fold, out=str(work / f"fold{fold}"))
            train_idx, val_idx, _ = split_for(fcfg, ds)
            fit(fcfg, ds, train_idx, val_idx, soft=soft, extra_loss=extra, meta_extra={"folds_file": folds_file})
            student_runs.append(work / f"fold{fold}")
    baselines = {}
    for name in ("h2o_seed",):
        runs = [runs_dir / name / f"fold{f}" for f in cfg["teacher_folds"] if (runs_dir / name / f"fold{f}" / "oof.json").exists()]
        if runs:
            baselines[f"{name} (baseline)"] = runs
    add_rows(rows, ds, {"student (--cv)": student_runs} if student_runs else {}, "student")
    add_rows(rows, ds, baselines, "baseline")

    # Post-processing is chosen on the student's own OOF predictions when we have them.
    group = "student (--cv)" if student_runs else "ensemble"
    pp_oofs = gather_oof({group: student_runs}, ds) if student_runs else oofs
    if not student_runs:
        group = next(iter(oofs.plain))
    post = choose_postprocessing(pp_oofs, schema.names, group)
    console.print(report_table(rows, schema.names))
    console.print(f"post-processing chosen on OOF of {group}: flip TTA {post['tta']['hflip']}, "
                  f"cleanup {post['cleanup']['min_area'] or 'none'}; mIoU no TTA "
                  f"{post['ablation']['no_tta']['miou'] * 100:.2f}, TTA {post['ablation']['tta']['miou'] * 100:.2f}, "
                  f"chosen {post['ablation']['chosen_tta_plus_cleanup']['miou'] * 100:.2f}")

    full_cfg = dict(base, fold=-1, out=str(work / "full"))
    train_idx, val_idx, _ = split_for(full_cfg, ds)
    teacher_scores = {k: {"miou_tta": v["tta"]["miou"], "miou": v["plain"]["miou"]} for k, v in rows.items()}
    meta_extra = {
        "folds_file": folds_file, "tta": post["tta"], "cleanup": post["cleanup"],
        "training_data": {"path": str(cfg["data"]), "images": len(ds), "sha1": dataset_digest(ds)},
        "teachers": [{"name": t.name, "family": t.family, "fold": t.fold, "file": str(t.model_file)} for t in teachers],
        "ensemble_weights": weights, "oof_scores": teacher_scores, "postprocessing_ablation": post["ablation"],
        "distillation": {"temperature": cfg["temperature"], "kd_weight": cfg["kd_weight"]},
    }
    fit(full_cfg, ds, train_idx, val_idx, soft=soft, extra_loss=extra, meta_extra=meta_extra)

    model, meta = load_model(Path(full_cfg["out"]) / "model.safetensors")
    meta.update(meta_extra)
    dtype = {"float16": torch.float16, "float32": None, "bfloat16": torch.bfloat16}[cfg["export_dtype"]]
    size = save_model(cfg["export"], model, meta, dtype=dtype)
    console.print(f"[b]exported {cfg['export']}[/b] ({size / 2**20:.1f} MB, {cfg['export_dtype']})")

    report = {"rows": rows, "classes": list(schema.names), "postprocessing": post, "ensemble_weights": weights}
    (work / "oof_report.json").write_text(json.dumps(report, indent=1))
    md = report_markdown(rows, schema.names)
    (work / "oof_report.md").write_text(md)
    console.print(f"OOF report: {work / 'oof_report.md'}, {work / 'oof_report.json'}")
    return 0
