"""Teachers: the finished fold runs whose ensemble teaches the student.

A teacher ``<name>`` fold ``k`` is its model file, found in ``runs/<name>/fold<k>/model.safetensors``
or, on a machine where ``runs/`` is gone, among the published teacher files
``weights/teachers/<name>/fold<k>.safetensors`` (fp16 copies committed while a campaign is under
way, see :func:`publish`). Everything else a teacher contributes is a cache rebuilt from its model
file and the fold assignment when missing: its out-of-fold (OOF) probabilities
(:func:`ensure_oof`) and the soft labels made from it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import Dataset
from ..exceptions import DistillError
from ..core.console import console
from ..core.runtime import resolve_device
from ..data.folds import split_for
from ..data.preprocess import normalization_meta
from ..inference.tta import predict_arrays
from ..models.modelfile import load_model, read_metadata, save_model
from ..training.done import not_done_reason
from ..training.oof import has_oof, oof_model_sha1, save_oof, to_uint8

PUBLISHED_DIR = Path("weights") / "teachers"


@dataclass
class Teacher:
    name: str
    family: str
    fold: int
    run_dir: Path      # where its OOF predictions (and, if trained here, its checkpoints) live
    model_file: Path
    meta: dict

    @property
    def label(self) -> str:
        return f"{self.name} fold{self.fold}"


def find_model_file(name: str, fold: int, runs_dir: Path, published_dir: Path = PUBLISHED_DIR) -> Path | None:
    """The teacher's model file: its run folder's, else the published copy, else None."""
    for path in (runs_dir / name / f"fold{fold}" / "model.safetensors", published_dir / name / f"fold{fold}.safetensors"):
        if path.is_file():
            return path
    return None


def collect_teachers(names: list[str], folds: list[int], runs_dir: Path = Path("runs"),
                     published_dir: Path = PUBLISHED_DIR) -> list[Teacher]:
    """All (teacher, fold) model files; raises one error naming every missing one with the command
    that trains it. Teachers must share the class schema and the folds file."""
    teachers, problems = [], []
    for name in names:
        for fold in folds:
            model_file = find_model_file(name, fold, runs_dir, published_dir)
            run_dir = runs_dir / name / f"fold{fold}"
            state = "missing" if model_file is None else None
            if model_file is not None and model_file.parent == run_dir:  # trained here: its run must be done
                state = not_done_reason(run_dir)
            if state is not None:
                problems.append(f"teacher {name} fold {fold} is {state} ({run_dir}); "
                                f"train it with: python train.py recipe={name} fold={fold}")
                continue
            meta = read_metadata(model_file)
            teachers.append(Teacher(name, meta.get("family") or name, fold, runs_dir / name / f"fold{fold}",
                                    model_file, meta))
    if problems:
        raise DistillError("\n  - ".join(["cannot distill:", *problems]))
    if not teachers:
        raise DistillError("no teachers configured (teachers=[...])")
    seen: dict[tuple[str, int], str] = {}
    for t in teachers:  # a family's OOF is one prediction per image: one teacher per (family, fold)
        other = seen.setdefault((t.family, t.fold), t.name)
        if other != t.name:
            raise DistillError(f"teachers {other} and {t.name} are both family {t.family} fold {t.fold}: a family "
                               "has one teacher per fold; distil from one of them, or compare them with "
                               f"python -m analysis.bootstrap --a runs/{other} --b runs/{t.name} --data DATA")
    ref = teachers[0]
    for t in teachers[1:]:
        if t.meta["schema"] != ref.meta["schema"]:
            raise DistillError(f"{t.model_file} has another class schema than {ref.model_file}")
        if Path(t.meta.get("folds_file", "")).name != Path(ref.meta.get("folds_file", "")).name:
            raise DistillError(f"{t.model_file} used folds {t.meta.get('folds_file')}, "
                               f"{ref.model_file} used {ref.meta.get('folds_file')}: not comparable")
        if t.meta["input_size"] != ref.meta["input_size"]:
            raise DistillError(f"{t.model_file} predicts at {t.meta['input_size']}, {ref.model_file} at "
                               f"{ref.meta['input_size']}: soft labels need one resolution")
    return teachers


def teacher_config(teacher: Teacher, data: str) -> dict:
    """The fold-split part of the teacher's training config (for :func:`workbench.folds.split_for`)."""
    recipe = teacher.meta.get("recipe", {})
    return {"data": data, "fold": teacher.fold, "folds": recipe.get("folds", 5), "seed": recipe.get("seed", 0),
            "folds_seed": recipe.get("folds_seed", -1), "folds_file": teacher.meta.get("folds_file") or recipe.get("folds_file", "")}


@torch.inference_mode()
def ensure_oof(teacher: Teacher, ds: Dataset, data: str, device_name: str = "auto") -> None:
    """Rebuild the teacher's OOF probabilities (plain and mirrored) on its held-out fold if they are
    missing, or if they were rebuilt from a teacher file that has changed since (a retrained or newly
    published teacher; OOF files written by the training run itself belong to its model file)."""
    digest = file_digest(teacher.model_file)
    if has_oof(teacher.run_dir):
        made_from = oof_model_sha1(teacher.run_dir)
        if made_from is None or made_from == digest:
            return
        console.print(f"{teacher.model_file} changed since the OOF predictions in {teacher.run_dir} were made "
                      "from it: rebuilding them")
    size = teacher.meta["input_size"][0]
    if ds.images.shape[1] != size:
        raise DistillError(f"{teacher.model_file} predicts at {size} px, the dataset is held at {ds.images.shape[1]}")
    _, val_idx, _ = split_for(teacher_config(teacher, data), ds)
    device = resolve_device(device_name)
    model, meta = load_model(teacher.model_file, device)
    # fp32, as inference.py runs a model: the OOF scores what a user gets (on a machine with native bf16,
    # "auto" would score a bf16 forward pass instead)
    views = predict_arrays(model, ds.images[val_idx], normalization_meta(meta["normalization"]["name"]), device,
                           flip_perm=ds.schema.flip_permutation, precision="fp32", parts=True)
    save_oof(teacher.run_dir, [ds.stems[i] for i in val_idx], ds.schema, size, teacher.fold,
             to_uint8(views.plain.numpy()), to_uint8(views.mirrored.numpy()), model_sha1=digest)
    console.print(f"rebuilt the OOF predictions of {teacher.label} from {teacher.model_file} "
                  f"({len(val_idx)} held-out images) -> {teacher.run_dir}")


def held_out_stems(teacher: Teacher, ds: Dataset, data: str) -> set[str]:
    """Stems of the images the teacher did not train on (its held-out fold)."""
    _, val_idx, _ = split_for(teacher_config(teacher, data), ds)
    return {ds.stems[i] for i in val_idx}


def publish(run_dir: str | Path, published_dir: Path = PUBLISHED_DIR) -> Path:
    """Copy a finished teacher run's model file in float16 (and its metrics.json) to
    ``<published_dir>/<name>/fold<k>.safetensors`` so that it survives a machine change."""
    run_dir = Path(run_dir)
    model, meta = load_model(run_dir / "model.safetensors")
    dest = published_dir / meta["name"] / f"fold{meta['fold']}.safetensors"
    save_model(dest, model, meta, dtype=torch.float16)
    metrics = run_dir / "metrics.json"
    if metrics.exists():
        m = json.loads(metrics.read_text())
        m.pop("val_iou", None)
        for h in m.get("history", []):
            h.pop("val_iou", None)
        dest.with_suffix(".metrics.json").write_text(json.dumps(m, indent=1))
    return dest


def file_digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dataset_digest(ds: Dataset) -> str:
    """Hash of the training data as the model saw it (stems + decoded, resized pixels + labels)."""
    h = hashlib.sha1("\n".join(ds.stems).encode())
    h.update(np.ascontiguousarray(ds.images).tobytes())
    h.update(np.ascontiguousarray(ds.masks).tobytes())
    return h.hexdigest()
