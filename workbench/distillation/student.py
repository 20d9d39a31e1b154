"""Training a student against soft labels, and its hard-label twin.

The student's loss is ``kd_weight * T^2 * KL(teacher_T || student_T) + (1 - kd_weight) * (CE + Dice)``
(``kd_mix: convex``, the default) or ``(CE + Dice) + kd_weight * T^2 * KL(...)`` (``kd_mix: additive``:
the KD term is added and the hard loss keeps its full weight, Dice included).
Its **twin** is the same recipe (architecture, data, epochs, augmentation, seed) with
``kd_weight = 0``: the honest baseline that says whether distillation paid. When a teacher run was
trained with exactly the twin's settings (the student recipe equals a teacher recipe), that run *is*
the twin and is reused instead of trained again.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..core.config import DEFAULTS
from ..data import Dataset
from ..training.losses import channel_kd_loss, kd_loss
from ..training import fit
from .online_teacher import OnlineTeacher
from .soft_labels import SoftLabels

# Keys that do not change what a hard-label run learns (names, outputs, distillation-only settings).
NOT_TRAINING_KEYS = {"name", "family", "out", "recipe", "teachers", "teacher_folds", "cv_folds", "temperature", "kd_weight",
                     "kd_mix", "kd_loss", "kd_targets", "twin", "export", "export_dtype", "family_max_gap", "exclusive_parts", "postprocess", "threads", "workers", "device", "save_oof", "folds_file", "folds_seed",
                     "data", "max_steps"}


KD_LOSSES = {"pixel": kd_loss, "channel": channel_kd_loss}


def make_kd_loss(temperature: float, kd_weight: float, mix: str = "convex", kind: str = "pixel",
                 teacher: OnlineTeacher | None = None):
    """The ``extra_loss`` hook of :func:`workbench.training.fit` for distillation. The teacher's
    probabilities are the batch's cached soft labels (``batch["soft"]``, cropped and warped with the
    image) or, given a ``teacher``, computed by it on the batch's augmented images (zero on the padding
    that ``batch["valid"]`` marks, so padding has no target either way)."""
    hard_weight = {"convex": 1 - kd_weight, "additive": 1.0}[mix]
    distil = KD_LOSSES[kind]

    def extra(logits, batch, hard):
        if teacher is not None:
            soft = teacher(batch["image"], batch.get("valid"))
        else:
            soft = batch["soft"].permute(0, 3, 1, 2).float()
        return kd_weight * distil(logits, soft, temperature) + hard_weight * hard
    return extra


def train_student(cfg: dict, ds: Dataset, train_idx, val_idx, soft: SoftLabels | OnlineTeacher | None,
                  meta_extra: dict) -> dict:
    """One student run (``soft`` given, ``cfg['kd_weight'] > 0``) or one hard-label run. ``soft``: a
    soft-label cache of the training images or an :class:`OnlineTeacher` (``kd_targets: online``)."""
    if soft is None or cfg["kd_weight"] == 0:
        return fit(cfg, ds, train_idx, val_idx, meta_extra=meta_extra)
    kd = dict(temperature=cfg["temperature"], kd_weight=cfg["kd_weight"], mix=cfg["kd_mix"], kind=cfg["kd_loss"])
    if isinstance(soft, OnlineTeacher):
        return fit(cfg, ds, train_idx, val_idx, extra_loss=make_kd_loss(**kd, teacher=soft), meta_extra=meta_extra,
                   valid_mask=True)
    missing = [ds.stems[i] for i in train_idx if int(i) not in soft.rows]
    if missing:
        raise ValueError(f"soft labels lack {len(missing)} training images, e.g. {missing[:3]}")
    return fit(cfg, ds, train_idx, val_idx, soft=soft, extra_loss=make_kd_loss(**kd), meta_extra=meta_extra)


def training_differences(saved: dict, wanted: dict) -> list[str]:
    """Training settings in which two configs differ; a key one of them does not know (older code)
    counts as holding its default."""
    keys = (set(saved) | set(wanted)) - NOT_TRAINING_KEYS
    return sorted(k for k in keys if saved.get(k, DEFAULTS.get(k)) != wanted.get(k, DEFAULTS.get(k)))


# Runs whose provenance does not record the precision they trained in (before session 7 of campaign 2)
# all ran on CPUs without native bf16, where ``precision: auto`` means fp32 (README, Results).
UNRECORDED_PRECISION = "fp32"


def find_twin_run(twin_cfg: dict, precision: str, candidates: list[tuple[Path, dict | None, str | None]]) -> Path | None:
    """The first finished run among ``candidates`` (run folder, the config it trained with or None when
    unknown or unfinished, the precision it trained in or None when unrecorded) that trains exactly like
    ``twin_cfg`` would here, in ``precision`` (:func:`workbench.core.runtime.effective_precision`):
    ``precision: auto`` is fp32 on one machine and bf16 on another, so the precision used is compared."""
    for run, saved, used in candidates:
        if saved is None or (used or UNRECORDED_PRECISION) != precision:
            continue
        if not set(training_differences(saved, twin_cfg)) - {"precision"}:
            return run
    return None


def finished_run(run: Path) -> tuple[dict | None, str | None]:
    """(saved config, precision used) of a finished run (one that wrote its model file), else (None, None)."""
    saved, metrics = run / "config.yaml", run / "metrics.json"
    if not (run / "model.safetensors").exists() or not saved.exists():
        return None, None
    try:
        used = json.loads(metrics.read_text()).get("provenance", {}).get("precision")
    except (OSError, ValueError, AttributeError):  # no metrics.json, or a broken one: precision unrecorded
        used = None
    return yaml.safe_load(saved.read_text()) or {}, used
