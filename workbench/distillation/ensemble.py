"""Distillation of the k-fold teacher ensemble into one student (``python distill.py``).

Steps, each a function below:

1. :func:`collect_teachers` - every finished fold of every teacher recipe; same folds file and schema.
2. :func:`oof_report` - per-class IoU / mIoU of each teacher (fold), each family (its folds' OOF
   predictions together), the probability-mean ensemble and an OOF-fitted weighted ensemble, with
   and without flip TTA.
3. :func:`soft_labels` - the ensemble's flip-TTA probabilities on every training image, cached once
   on disk as uint8 (N, S, S, C), memory-mapped, keyed by the teachers' file hashes.
4. the student is trained by :func:`workbench.training.fit` with :func:`workbench.losses.kd_loss`
   added; ``--cv`` first trains it per fold to measure its OOF mIoU beside the teachers'.
5. :func:`choose_postprocessing` - flip TTA and per-class connected-component thresholds picked on
   OOF predictions, kept only where they raise OOF IoU; written into the exported model file.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from rich.table import Table

from .data import Dataset
from .losses import kd_loss
from .metrics import confusion_matrix, iou_per_class
from .modelfile import load_model, read_metadata
from .oof import OOF, has_oof, load_oof
from .postprocess import suppress_small_components
from .runtime import resolve_device
from .training import console, evaluate_probs, predict_set

# Candidate minimum component areas, as fractions of the image area (0.01% .. 2%).
CLEANUP_CANDIDATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 2e-2)


class DistillError(RuntimeError):
    pass


@dataclass
class Teacher:
    name: str
    family: str
    fold: int
    run_dir: Path
    model_file: Path
    meta: dict


def collect_teachers(names: list[str], folds: list[int], runs_dir: Path = Path("runs")) -> list[Teacher]:
    """All (teacher, fold) runs; raises one error naming every missing or unfinished one."""
    teachers, problems = [], []
    for name in names:
        for fold in folds:
            run = runs_dir / name / f"fold{fold}"
            model_file = run / "model.safetensors"
            metrics = run / "metrics.json"
            if not model_file.exists() or not has_oof(run) or not metrics.exists() \
                    or not json.loads(metrics.read_text()).get("finished"):
                problems.append(f"teacher {name} fold {fold} is missing or unfinished ({run}); "
                                f"train it with: python train.py recipe={name} fold={fold}")
                continue
            meta = read_metadata(model_file)
            teachers.append(Teacher(name, meta.get("family") or name, fold, run, model_file, meta))
    if problems:
        raise DistillError("\n  - ".join(["cannot distill:", *problems]))
    if not teachers:
        raise DistillError("no teachers configured (teachers=[...])")
    ref = teachers[0]
    for t in teachers[1:]:
        if t.meta["schema"] != ref.meta["schema"]:
            raise DistillError(f"{t.model_file} has another class schema than {ref.model_file}")
        if t.meta.get("folds_file") != ref.meta.get("folds_file"):
            raise DistillError(f"{t.model_file} used folds {t.meta.get('folds_file')}, "
                               f"{ref.model_file} used {ref.meta.get('folds_file')}: not comparable")
    return teachers


def file_digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dataset_digest(ds: Dataset) -> str:
    """Hash of the training data as the model saw it (stems + decoded, resized pixels + labels)."""
    h = hashlib.sha1("\n".join(ds.stems).encode())
    h.update(ds.images.tobytes())
    h.update(ds.masks.tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------- OOF
@dataclass
class OOFSet:
    """OOF probabilities of several models (keyed by name), aligned on the same images."""
    stems: list[str]
    full_masks: list[np.ndarray]
    small_masks: np.ndarray           # masks at the OOF resolution, for fast threshold search
    plain: dict[str, list[np.ndarray]]  # name -> per image uint8 (C, S, S)
    flip: dict[str, list[np.ndarray]]


def gather_oof(groups: dict[str, list[Path]], ds: Dataset) -> OOFSet:
    """For each group (family) the OOF of its fold runs, restricted to images every group has."""
    per_group = {}
    for g, runs in groups.items():
        entries = {}
        for run in runs:
            oof: OOF = load_oof(run)
            for i, stem in enumerate(oof.stems):
                entries[stem] = (oof.probs[i], oof.probs_flip[i])
        per_group[g] = entries
    common = sorted(set.intersection(*(set(e) for e in per_group.values())))
    index = {s: i for i, s in enumerate(ds.stems)}
    missing = [s for s in common if s not in index]
    if missing:
        raise DistillError(f"OOF images {missing[:5]} are not in the dataset {ds.data_dir}")
    return OOFSet(common, [ds.full_masks[index[s]] for s in common], ds.masks[[index[s] for s in common]],
                  {g: [e[s][0] for s in common] for g, e in per_group.items()},
                  {g: [e[s][1] for s in common] for g, e in per_group.items()})


def mix(oofs: OOFSet, weights: dict[str, float], tta: bool, i: int) -> np.ndarray:
    """float32 (C, S, S) weighted mean of the groups' probabilities of image i."""
    total = sum(weights.values())
    p = 0.0
    for g, w in weights.items():
        if w == 0:
            continue
        q = oofs.plain[g][i].astype(np.float32)
        if tta:
            q = 0.5 * (q + oofs.flip[g][i].astype(np.float32))
        p = p + (w / total / 255.0) * q
    return p


def evaluate_mix(oofs: OOFSet, weights: dict[str, float], tta: bool, full_res: bool = True,
                 post=None) -> np.ndarray:
    """Per-class IoU of a weighted mix; at the masks' resolution, or at the OOF resolution (fast).
    ``post(probs) -> probs`` is an optional post-processing at the OOF resolution, applied before
    upsampling exactly as :class:`workbench.predictor.Predictor` applies the cleanup."""
    C = next(iter(oofs.plain.values()))[0].shape[0]
    cm = np.zeros((C, C), dtype=np.int64)
    for i in range(len(oofs.stems)):
        p = mix(oofs, weights, tta, i)
        if post is not None:
            p = post(p)
        if full_res:
            cm += evaluate_probs(p[None], [oofs.full_masks[i]], C)
        else:
            cm += confusion_matrix(oofs.small_masks[i], p.argmax(0), C)
    return iou_per_class(cm)


def fit_weights(oofs: OOFSet, step: float = 0.1) -> dict[str, float]:
    """Grid search of ensemble weights on the simplex (OOF resolution, with TTA)."""
    groups = list(oofs.plain)
    if len(groups) == 1:
        return {groups[0]: 1.0}
    grid = np.round(np.arange(0, 1 + 1e-9, step), 3)
    best, best_w = -1.0, None
    for ws in itertools.product(grid, repeat=len(groups) - 1):
        last = 1 - sum(ws)
        if last < -1e-9:
            continue
        w = dict(zip(groups, [*ws, max(0.0, last)]))
        score = np.nanmean(evaluate_mix(oofs, w, tta=True, full_res=False))
        if score > best:
            best, best_w = score, w
    return best_w


def iou_row(iou: np.ndarray) -> dict:
    return {"miou": float(np.nanmean(iou)), "iou": [None if not np.isfinite(v) else float(v) for v in iou]}


def oof_report(teachers: list[Teacher], ds: Dataset) -> tuple[dict, OOFSet, dict]:
    """Rows: each teacher fold, each family, the probability-mean ensemble and the OOF-fitted
    weighted ensemble; each with per-class IoU with and without flip TTA. Also returns the aligned
    OOF set of the families and the fitted weights."""
    rows = {}
    for t in teachers:  # each teacher on its own held-out fold
        add_rows(rows, ds, {f"{t.name} fold{t.fold}": [t.run_dir]}, "teacher")
    families: dict[str, list[Path]] = {}
    for t in teachers:
        families.setdefault(t.family, []).append(t.run_dir)
    oofs = gather_oof(families, ds)
    for fam in families:
        rows[f"family {fam}"] = {"kind": "family", "images": len(oofs.stems),
                                 "plain": iou_row(evaluate_mix(oofs, {fam: 1}, False)),
                                 "tta": iou_row(evaluate_mix(oofs, {fam: 1}, True))}
    equal = {f: 1.0 for f in families}
    rows["ensemble (mean)"] = {"kind": "ensemble", "images": len(oofs.stems), "weights": equal,
                               "plain": iou_row(evaluate_mix(oofs, equal, False)),
                               "tta": iou_row(evaluate_mix(oofs, equal, True))}
    fitted = fit_weights(oofs)
    if len(families) > 1:
        rows["ensemble (OOF-fitted weights)"] = {
            "kind": "ensemble", "images": len(oofs.stems), "weights": fitted,
            "plain": iou_row(evaluate_mix(oofs, fitted, False)), "tta": iou_row(evaluate_mix(oofs, fitted, True))}
    return rows, oofs, fitted


def add_rows(rows: dict, ds: Dataset, named_runs: dict[str, list[Path]], kind: str) -> dict:
    """Add one row per name, scoring the OOF predictions of its fold runs (student, baselines)."""
    for name, runs in named_runs.items():
        o = gather_oof({name: runs}, ds)
        rows[name] = {"kind": kind, "images": len(o.stems),
                      "plain": iou_row(evaluate_mix(o, {name: 1}, False)),
                      "tta": iou_row(evaluate_mix(o, {name: 1}, True))}
    return rows


def report_table(rows: dict, names: tuple[str, ...]) -> Table:
    table = Table(title="out-of-fold IoU (%) with flip TTA; bottom rows: mIoU without / with TTA")
    table.add_column("class")
    for r in rows:
        table.add_column(r.replace(" (", "\n("), justify="right")
    for c, n in enumerate(names):
        table.add_row(n, *[f"{v * 100:.1f}" if (v := rows[r]["tta"]["iou"][c]) is not None else "-" for r in rows])
    table.add_row("[b]mIoU, no TTA[/b]", *[f"{rows[r]['plain']['miou'] * 100:.2f}" for r in rows])
    table.add_row("[b]mIoU, flip TTA[/b]", *[f"[b]{rows[r]['tta']['miou'] * 100:.2f}[/b]" for r in rows])
    table.add_row("images", *[str(rows[r]["images"]) for r in rows])
    return table


def report_markdown(rows: dict, names: tuple[str, ...]) -> str:
    head = "| class | " + " | ".join(rows) + " |\n|---|" + "---:|" * len(rows) + "\n"
    body = ""
    for c, n in enumerate(names):
        body += f"| {n} | " + " | ".join(
            f"{v * 100:.1f}" if (v := rows[r]["tta"]["iou"][c]) is not None else "-" for r in rows) + " |\n"
    body += "| **mIoU, no TTA** | " + " | ".join(f"{rows[r]['plain']['miou'] * 100:.2f}" for r in rows) + " |\n"
    body += "| **mIoU, flip TTA** | " + " | ".join(f"**{rows[r]['tta']['miou'] * 100:.2f}**" for r in rows) + " |\n"
    body += "| images | " + " | ".join(str(rows[r]["images"]) for r in rows) + " |\n"
    return head + body


# --------------------------------------------------------------------------------- soft labels
@torch.inference_mode()
def soft_labels(teachers: list[Teacher], weights: dict[str, float], ds: Dataset, image_size: int,
                cache_dir: Path, device_name: str = "auto") -> np.ndarray:
    """(N, S, S, C) uint8 flip-TTA ensemble probabilities on every training image, memory-mapped.

    Family weights are split equally over each family's folds. The cache file name hashes the
    teacher files, the weights and the data, so a retrained teacher invalidates it."""
    key = hashlib.sha1(json.dumps({
        "teachers": sorted(file_digest(t.model_file) for t in teachers), "weights": weights,
        "data": dataset_digest(ds), "size": image_size}, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir / f"soft_{key}.npy"
    if path.exists():
        console.print(f"soft labels from cache {path}")
        return np.load(path, mmap_mode="r")
    device = resolve_device(device_name)
    C = ds.schema.num_classes
    per_family = {}
    for t in teachers:
        per_family[t.family] = per_family.get(t.family, 0) + 1
    acc = np.zeros((len(ds), C, image_size, image_size), dtype=np.float32)
    for t in teachers:
        w = weights.get(t.family, 0.0) / per_family[t.family] / sum(weights.values())
        if w == 0:
            continue
        if t.meta["input_size"] != [image_size, image_size]:
            raise DistillError(f"{t.model_file} was trained at {t.meta['input_size']}, the student at {image_size}")
        model, meta = load_model(t.model_file, device)
        cfg = {"normalization": meta["normalization"]["name"], "precision": "auto"}
        console.print(f"soft labels: {t.name} fold {t.fold} (weight {w:.3f})")
        for i in range(0, len(ds), 32):
            imgs = ds.images[i:i + 32]
            p = predict_set(model, imgs, cfg, device) + predict_set(model, imgs, cfg, device, ds.schema.flip_permutation)
            acc[i:i + 32] += (0.5 * w) * p.numpy()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(ds), image_size, image_size, C))
    for i in range(len(ds)):
        out[i] = np.clip(np.rint(acc[i].transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
    out.flush()
    del out
    tmp.replace(path)
    console.print(f"soft labels cached in {path} ({path.stat().st_size / 2**20:.0f} MB)")
    return np.load(path, mmap_mode="r")


def make_kd_loss(temperature: float, kd_weight: float):
    """loss = kd_weight * T^2 KL(teacher_T || student_T) + (1 - kd_weight) * (CE + Dice on hard labels)."""
    def extra(logits, batch, hard):
        soft = batch["soft"].permute(0, 3, 1, 2).float() / 255.0
        return kd_weight * kd_loss(logits, soft, temperature) + (1 - kd_weight) * hard
    return extra


# ----------------------------------------------------------------------------- post-processing
def choose_postprocessing(oofs: OOFSet, names: tuple[str, ...], group: str) -> dict:
    """Flip TTA on/off and per-class cleanup thresholds that raise OOF IoU (nnU-Net style: each
    class decided on its own, kept only if it helps). Returns the metadata ``tta``/``cleanup`` parts
    plus the ablation numbers.

    The threshold search runs at the OOF resolution; an image is re-evaluated for (class, threshold)
    only if its prediction has a component of that class smaller than the threshold, otherwise
    cleanup cannot change it."""
    w = {group: 1.0}
    plain = evaluate_mix(oofs, w, tta=False)
    tta = evaluate_mix(oofs, w, tta=True)
    use_tta = bool(np.nanmean(tta) >= np.nanmean(plain))
    C = len(names)
    probs = [mix(oofs, w, use_tta, i) for i in range(len(oofs.stems))]
    labels = [p.argmax(0).astype(np.uint8) for p in probs]
    cms = [confusion_matrix(m, lab, C) for m, lab in zip(oofs.small_masks, labels)]
    base = np.sum(cms, axis=0)
    base_iou = iou_per_class(base)
    chosen: dict[str, float] = {}
    gains = {}
    for c in range(1, C):  # background is what remains, never cleaned on its own
        smallest = []
        for lab in labels:
            n, _, stats, _ = cv2.connectedComponentsWithStats((lab == c).view(np.uint8), connectivity=8)
            smallest.append(stats[1:, cv2.CC_STAT_AREA].min() / lab.size if n > 1 else np.inf)
        best_gain, best_t = 0.0, None
        for t in CLEANUP_CANDIDATES:
            cm = base.copy()
            for i in np.flatnonzero(np.array(smallest) < t):
                cleaned = suppress_small_components(probs[i], {c: t}).argmax(0)
                cm += confusion_matrix(oofs.small_masks[i], cleaned, C) - cms[i]
            gain = float(iou_per_class(cm)[c] - base_iou[c])
            if np.isfinite(gain) and gain > best_gain + 1e-4:
                best_gain, best_t = gain, t
        if best_t is not None:
            chosen[names[c]], gains[names[c]] = best_t, best_gain
    by_index = {names.index(n): t for n, t in chosen.items()}
    after = evaluate_mix(oofs, w, use_tta, post=(lambda p: suppress_small_components(p, by_index)) if by_index else None)
    return {
        "tta": {"hflip": use_tta, "scales": [1.0]},
        "cleanup": {"enabled": bool(chosen), "min_area": chosen},
        "ablation": {"no_tta": iou_row(plain), "tta": iou_row(tta),
                     "chosen_tta_plus_cleanup": iou_row(after), "cleanup_gain_per_class_lowres": gains},
    }
