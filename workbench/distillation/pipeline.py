"""The ``distill.py`` pipeline: teachers -> OOF report -> teaching families -> (per fold: soft labels
from that fold's teachers, student, hard-label twin) -> post-processing choice -> final student on
all images -> export.

**Protocol of the student's cross-validation.** Student fold *k* learns only from the fold-*k*
teachers of each family (which never saw fold *k*), on fold *k*'s training images; its twin trains on
the same images with the same schedule and ``kd_weight = 0``. Nothing about fold *k*'s images reaches
either, so student-vs-twin is a fair comparison. The final student (all images) learns from every
teacher.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..core import config as config_mod
from ..data import load_dataset
from ..exceptions import DistillError
from ..core.atomic import atomic_write
from ..core.console import console
from ..core.runtime import effective_precision, resolve_device
from ..data.augment import build_train_transform
from ..data.folds import split_for
from ..models.modelfile import load_model, save_model
from ..evaluation.bootstrap import paired_bootstrap
from ..evaluation.oof_table import save_table
from .ensemble import (add_rows, gather_oof, mix_confusions, mix_table, oof_report, report_markdown, report_table,
                       select_families, table_row)
from .postprocessing import (choose_postprocessing, describe_postprocessing, exclusive_candidates,
                             unchosen_postprocessing)
from .online_teacher import OnlineTeacher
from .soft_labels import SoftLabels, confidence_summary, soft_labels
from .student import UNRECORDED_PRECISION, find_twin_run, finished_run, train_student, training_differences
from .teachers import Teacher, collect_teachers, dataset_digest, ensure_oof, held_out_stems

PROTOCOL = ("Student fold k learns only from the fold-k teachers of each teaching family, on fold k's training "
            "images; its hard-label twin trains on the same images with the same schedule and kd_weight=0. "
            "No model used for fold k saw fold k's images, so student, twin and teachers are scored on "
            "images none of them trained on. Ensemble weights and post-processing are chosen on the same OOF "
            "data they are reported on.")


def run(argv: list[str], cv: bool = False, final: bool = True, runs_dir: Path = Path("runs")) -> int:
    """``cv``: cross-validate student and twin on ``cv_folds`` (default: ``teacher_folds``) first;
    ``final``: train the student on all images, taught by every teacher of ``teacher_folds``, and
    export it. With ``kd_weight=0`` the final student is its own hard-label twin (no soft labels)."""
    cfg = config_mod.resolve(argv, default_recipe="student")
    cv_folds = cfg["cv_folds"] or cfg["teacher_folds"]
    console.rule(f"distill {cfg['name']} from {cfg['teachers']} folds {cfg['teacher_folds']}")
    unknown = sorted(set(cv_folds) - set(cfg["teacher_folds"]))
    if cv and unknown:
        raise DistillError(f"cv_folds {unknown} are not in teacher_folds {cfg['teacher_folds']}: student fold k "
                           "learns from the fold-k teachers")
    teachers = collect_teachers(cfg["teachers"], cfg["teacher_folds"], runs_dir)
    ds = load_dataset(cfg["data"], cfg["image_size"])
    if teachers[0].meta["schema"] != ds.schema.to_dict():
        raise DistillError(f"teachers were trained on another schema than {cfg['data']}")
    for t in teachers:
        ensure_oof(t, ds, cfg["data"], cfg["device"])
        held_out_stems(t, ds, cfg["data"])  # a missing folds file is rebuilt from the teachers' split, not the student's
    folds_file = teachers[0].meta.get("folds_file", "")
    base = dict(cfg, folds_file=folds_file)
    work = runs_dir / cfg["name"]

    rows, oofs, _, teaching = oof_report(teachers, ds)
    weights, dropped = select_families(rows, cfg["family_max_gap"])
    for line in dropped:
        console.print(line, markup=False)
    console.print(f"teaching families (equal weights): {sorted(weights)}", markup=False)
    if len(weights) < len(oofs.plain):
        teaching = mix_table(oofs, weights, ds)
        rows["ensemble (teaching families)"] = table_row(teaching, "ensemble", weights=weights)
    # the soft labels' source, image by image: its lead over a single model can be bootstrapped
    # (python -m analysis.bootstrap --b runs/<name>/teaching_ensemble_oof_table.npz)
    save_table(work / "teaching_ensemble_oof_table.npz", teaching)
    distill_meta = {"temperature": cfg["temperature"], "kd_weight": cfg["kd_weight"], "kd_mix": cfg["kd_mix"],
                    "kd_loss": cfg["kd_loss"], "kd_targets": cfg["kd_targets"], "family_weights": weights,
                    "excluded": dropped, "protocol": PROTOCOL}

    student_runs, twin_runs, cv_info = [], [], {}
    if cv:
        for fold in cv_folds:
            s_run, t_run, info = cross_validate_fold(base, ds, teachers, weights, fold, work, runs_dir, distill_meta)
            student_runs.append(s_run)
            twin_runs.append(t_run)
            cv_info[fold] = info
            add_rows(rows, ds, {f"twin fold{fold}": [t_run], f"student fold{fold}": [s_run]}, "fold")
        add_rows(rows, ds, {"twin (hard labels)": twin_runs, "student (KD)": student_runs}, "student")
        pair = gather_oof({"twin": twin_runs, "student": student_runs}, ds)
        versus = paired_bootstrap(mix_confusions(pair, {"twin": 1}, True), mix_confusions(pair, {"student": 1}, True))
        rows["student (KD)"]["vs_twin"] = {"delta": versus.delta, "low": versus.low, "high": versus.high,
                                           "images": versus.images, "text": str(versus)}
        console.print(f"student (KD) minus twin (hard labels), flip TTA: {versus}", markup=False)
    baselines = {}
    for name in ("h2o_seed",):
        runs = [runs_dir / name / f"fold{f}" for f in (cv_folds if cv else cfg["teacher_folds"])
                if (runs_dir / name / f"fold{f}" / "oof.json").exists()]
        if runs:
            baselines[f"{name} (baseline)"] = runs
    add_rows(rows, ds, baselines, "baseline")

    # post-processing is chosen on the student's OOF, or (no student) on the best family's
    group = "student (KD)" if student_runs else max(oofs.plain, key=lambda f: rows[f"family {f}"]["tta"]["miou"])
    if cfg["postprocess"]:
        pp_oofs = gather_oof({group: student_runs}, ds) if student_runs else oofs
        post = choose_postprocessing(pp_oofs, ds.schema.names, group,
                                     exclusive=exclusive_candidates(cfg["exclusive_parts"], ds))
    else:
        post = unchosen_postprocessing()
    console.print(report_table(rows, ds.schema.names))
    chosen_on = (group if student_runs else f"family {group}") if cfg["postprocess"] else "not chosen (postprocess=false)"
    console.print(describe_postprocessing(post, chosen_on), markup=False)
    report = {"rows": rows, "classes": list(ds.schema.names), "postprocessing": post,
              "postprocessing_chosen_on": chosen_on, "ensemble_weights": weights,
              "excluded_families": dropped, "protocol": PROTOCOL if cv else "", "cv": cv_info,
              "settings": {k: cfg[k] for k in ("kd_weight", "kd_mix", "kd_loss", "kd_targets", "temperature", "epochs", "image_size",
                                               "crop_size")}}
    write_report(work, report, ds.schema.names)
    if not final:
        return 0

    full_cfg = dict(base, fold=-1, out=str(work / "full"))
    train_idx, _, _ = split_for(full_cfg, ds)
    soft = teaching_targets(cfg, teachers, weights, ds, train_idx, work / "cache") if cfg["kd_weight"] > 0 else None
    teacher_scores = {k: {"miou_tta": v["tta"]["miou"], "miou": v["plain"]["miou"]} for k, v in rows.items()}
    meta_extra = {
        "folds_file": folds_file, "tta": post["tta"], "exclusive": post["exclusive"], "cleanup": post["cleanup"],
        "training_data": {"path": str(cfg["data"]), "images": len(ds), "sha1": dataset_digest(ds)},
        "teachers": soft.teachers if soft else [], "ensemble_weights": weights, "oof_scores": teacher_scores,
        "postprocessing_ablation": post["ablation"], "distillation": distill_meta,
    }
    train_student(full_cfg, ds, train_idx, np.array([], dtype=np.int64), soft, meta_extra)
    export = Path(cfg["export"] or work / "student.safetensors")
    model, meta = load_model(Path(full_cfg["out"]) / "model.safetensors")
    meta.update(meta_extra)
    dtype = {"float16": torch.float16, "float32": None, "bfloat16": torch.bfloat16}[cfg["export_dtype"]]
    size = save_model(export, model, meta, dtype=dtype)
    console.print(f"[b]exported {export}[/b] ({size / 2**20:.1f} MB, {cfg['export_dtype']})")
    return 0


def cross_validate_fold(base: dict, ds, teachers: list[Teacher], weights: dict, fold: int, work: Path,
                        runs_dir: Path, distill_meta: dict) -> tuple[Path, Path, dict]:
    """Student and twin of one fold; soft labels from that fold's teachers only."""
    fcfg = dict(base, fold=fold, teacher_folds=[fold], out=str(work / f"fold{fold}"))  # what it learns from
    train_idx, val_idx, _ = split_for(fcfg, ds)
    fold_teachers = [t for t in teachers if t.fold == fold and t.family in weights]
    val_stems = {ds.stems[i] for i in val_idx}
    for t in fold_teachers:  # the protocol, checked rather than assumed
        if held_out_stems(t, ds, base["data"]) != val_stems:
            raise DistillError(f"{t.label} was not held out on fold {fold}'s images: its soft labels would leak")
    twin, twin_cfg = find_twin(base, fold, teachers, ds, val_stems, runs_dir)  # before the student: errors early
    soft = teaching_targets(base, fold_teachers, weights, ds, train_idx, work / "cache")
    summaries = {"soft_labels": confidence_summary(soft if isinstance(soft, SoftLabels) else soft.preview(ds, train_idx),
                                                   ds.masks)}
    if isinstance(soft, OnlineTeacher):  # what the student will see: the targets on augmented crops
        transform = build_train_transform(base["augment"], ds.schema.flip_permutation, base["crop_size"])
        if transform is not None:
            transform.set_random_seed(base["seed"])
            preview = soft.preview(ds, train_idx, transform)
            summaries["soft_labels_augmented"] = confidence_summary(preview, preview.masks)
    for key, summary in summaries.items():
        console.print(f"fold {fold} {key.replace('_', ' ')}: mean top-1 probability {summary['top1']:.3f}, "
                      f"second {summary['top2']:.4f}, {summary['share_above_0.99'] * 100:.1f} % of pixels above 0.99, "
                      f"entropy {summary['entropy']:.3f} nats, top-1 = hard label on "
                      f"{summary['agreement_with_labels'] * 100:.1f} % of pixels", markup=False)
    meta = {"folds_file": base["folds_file"], "distillation": dict(distill_meta, teachers=soft.teachers)}
    train_student(fcfg, ds, train_idx, val_idx, soft, meta)

    if twin is None:
        console.print(f"training the hard-label twin of fold {fold} -> {twin_cfg['out']}", markup=False)
        train_student(twin_cfg, ds, train_idx, val_idx, None, {"folds_file": base["folds_file"]})
        twin = Path(twin_cfg["out"])
    else:
        console.print(f"hard-label twin of fold {fold}: {twin} (trained with identical settings)", markup=False)
    return Path(fcfg["out"]), twin, dict(summaries, teachers=[t.label for t in fold_teachers], twin=str(twin))


def teaching_targets(cfg: dict, teachers: list[Teacher], weights: dict, ds, train_idx,
                     cache_dir: Path) -> SoftLabels | OnlineTeacher:
    """What the student learns from: the cached soft labels of its training images (``kd_targets:
    cached``) or the teachers themselves, run on each augmented batch (``online``)."""
    if cfg["kd_targets"] == "online":
        return OnlineTeacher(teachers, weights, ds, cfg["device"])
    return soft_labels(teachers, weights, ds, train_idx, cache_dir, cfg["device"])


def find_twin(base: dict, fold: int, teachers: list[Teacher], ds, val_stems: set[str],
              runs_dir: Path) -> tuple[Path | None, dict]:
    """(the finished run that is student fold ``fold``'s hard-label twin, or None: train it; the twin's
    config). A teacher of this fold (or the fold's run of the recipe named by ``twin``) trained with the
    twin's settings is the twin: trained here or published (a model file carries the config it trained
    with, and its provenance the precision); its OOF predictions are rebuilt from the file if missing."""
    twin_out = runs_dir / f"{base['name']}_twin" / f"fold{fold}"
    twin_cfg = dict(base, fold=fold, kd_weight=0.0, name=f"{base['name']}_twin", out=str(twin_out))
    named = collect_teachers([base["twin"]], [fold], runs_dir) if base["twin"] else []
    models = named + [t for t in teachers if t.fold == fold and t.name in base["teachers"]]
    precision = effective_precision(resolve_device(base["device"]), base["precision"])
    candidates = [(t.run_dir, t.meta.get("recipe"), t.meta.get("provenance", {}).get("precision")) for t in models]
    twin = find_twin_run(twin_cfg, precision, candidates + [(twin_out, *finished_run(twin_out))])
    if named and twin != named[0].run_dir:
        t = named[0]
        used = t.meta.get("provenance", {}).get("precision") or UNRECORDED_PRECISION
        differences = [k for k in training_differences(t.meta.get("recipe", {}), twin_cfg) if k != "precision"]
        differences += [f"precision ({used}, the student {precision})"] if used != precision else []
        raise DistillError(f"twin={t.name}: {t.model_file} was not trained like student fold {fold} without soft "
                           f"labels; it differs in {', '.join(differences)}")
    for t in named:
        if held_out_stems(t, ds, base["data"]) != val_stems:
            raise DistillError(f"twin={t.name}: {t.label} did not hold out fold {fold}'s images")
        ensure_oof(t, ds, base["data"], base["device"])
    return twin, twin_cfg


def write_report(work: Path, report: dict, names) -> None:
    work.mkdir(parents=True, exist_ok=True)
    atomic_write(work / "oof_report.json", lambda p: p.write_text(json.dumps(report, indent=1)))
    md = report_markdown(report["rows"], names)
    if report.get("protocol"):
        md = f"Protocol: {report['protocol']}\n\n" + md
    for line in report.get("excluded_families", []):
        md += f"\n{line}\n"
    versus = report["rows"].get("student (KD)", {}).get("vs_twin")
    if versus:
        md += f"\nStudent (KD) minus its hard-label twin, flip TTA: {versus['text']}\n"
    if report.get("postprocessing"):
        md += "\n" + describe_postprocessing(report["postprocessing"], report.get("postprocessing_chosen_on", "?")) + "\n"
    atomic_write(work / "oof_report.md", lambda p: p.write_text(md))
    console.print(f"OOF report: {work / 'oof_report.md'}, {work / 'oof_report.json'}", markup=False)
