"""Soft labels: the teacher ensemble's flip-TTA probabilities on the student's training images.

Stored once per (teachers, weights, images, resolution) as float16 **log-probabilities** of shape
(N, S, S, C), memory-mapped, with a JSON sidecar naming the teachers, the weights, the images, the
dtype and the temperature they were computed at (1: temperature is applied in the loss). float16
logs keep probabilities down to ~1e-12 with three significant digits, so the tempered teacher of
the KD loss sees the ensemble's real secondary probabilities, not uint8 quantisation noise.

Rows are handed to training as float32 *probabilities* (H, W, C): spatial augmentation pads them
with zeros, which :func:`workbench.training.losses.kd_loss` recognises as "no soft label here".

:func:`ensemble_probs` is the one place the teaching ensemble is run; the cache above and the online
targets of :mod:`.online_teacher` (teachers run on the student's augmented batch) both call it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import Dataset
from ..core.atomic import remove_stale_temporaries
from ..exceptions import DistillError
from ..core.console import console
from ..core.runtime import resolve_device
from ..data.preprocess import normalization_meta
from ..data.preprocess import to_tensor
from ..inference import tta
from ..models.modelfile import load_model
from .teachers import Teacher, dataset_digest, file_digest

LOG_FLOOR = 1e-12  # probabilities below this are stored as log(1e-12)


@dataclass
class SoftLabels:
    """Soft labels of a subset of a dataset, indexed by the *dataset* index of an image."""
    log_probs: np.ndarray    # (M, S, S, C) float16, memory-mapped
    rows: dict[int, int]     # dataset index -> row
    info: dict               # the sidecar JSON

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, dataset_index: int) -> np.ndarray:
        """float32 (S, S, C) probabilities of one image."""
        return np.exp(self.log_probs[self.rows[int(dataset_index)]].astype(np.float32))

    @property
    def teachers(self) -> list[dict]:
        return self.info["teachers"]


def teacher_weights(teachers: list[Teacher], family_weights: dict[str, float]) -> dict[str, float]:
    """Per-teacher weights: each family's weight split equally over its teachers, normalised to 1."""
    per_family: dict[str, int] = {}
    for t in teachers:
        per_family[t.family] = per_family.get(t.family, 0) + 1
    raw = {t.label: family_weights.get(t.family, 0.0) / per_family[t.family] for t in teachers}
    total = sum(raw.values())
    if total <= 0:
        raise DistillError(f"ensemble weights {family_weights} give no weight to any of {sorted(raw)}")
    return {k: v / total for k, v in raw.items()}


def teacher_records(teachers: list[Teacher], weights: dict[str, float]) -> list[dict]:
    """What a model file and a cache sidecar say about the teachers behind the soft labels."""
    return [{"name": t.name, "family": t.family, "fold": t.fold, "file": str(t.model_file), "weight": weights[t.label]}
            for t in teachers]


def describe_teachers(teachers: list[Teacher], weights: dict[str, float]) -> str:
    """"ta fold0 (0.50), tb fold0 (0.50)": the teachers with a positive weight."""
    return ", ".join(f"{t.label} ({weights[t.label]:.2f})" for t in teachers if weights[t.label] > 0)


def check_input_size(teachers: list[Teacher], size: int) -> None:
    for t in teachers:
        if t.meta["input_size"] != [size, size]:
            raise DistillError(f"{t.model_file} was trained at {t.meta['input_size']}, the student at {size}")


def load_teaching_models(teachers: list[Teacher], weights: dict[str, float], device) -> list[tuple[float, torch.nn.Module, dict]]:
    """(weight, model in eval mode, normalisation) of every teacher with a positive weight."""
    models = []
    for t in teachers:
        if weights[t.label] > 0:
            model, meta = load_model(t.model_file, device)
            models.append((weights[t.label], model, normalization_meta(meta["normalization"]["name"])))
    return models


@torch.no_grad()
def ensemble_probs(models: list[tuple[float, torch.nn.Module, dict]], images, flip_perm, device) -> torch.Tensor:
    """The teaching ensemble's flip-TTA probabilities, float32 (N, C, H, W) on ``device``, of uint8
    (N, H, W, 3) RGB images (a numpy array or a tensor): each teacher's :func:`~workbench.inference.tta.flip_tta`,
    averaged with the weights of :func:`load_teaching_models`; autocast ``auto`` (bf16 where native)."""
    acc = 0.0
    for weight, model, norm in models:
        acc = acc + weight * tta.flip_tta(model, to_tensor(images, norm, device), flip_perm, precision="auto")
    return acc


def cache_key(teachers: list[Teacher], weights: dict[str, float], ds: Dataset, indices: np.ndarray) -> str:
    return hashlib.sha1(json.dumps({
        "teachers": sorted((t.label, file_digest(t.model_file)) for t in teachers), "weights": weights,
        "data": dataset_digest(ds), "stems": [ds.stems[i] for i in indices], "size": int(ds.images.shape[1]),
        "format": "log_probs_float16"}, sort_keys=True).encode()).hexdigest()[:16]


def open_cache(path: Path, ds: Dataset) -> SoftLabels:
    info = json.loads(path.with_suffix(".json").read_text())
    index = {s: i for i, s in enumerate(ds.stems)}
    return SoftLabels(np.load(path, mmap_mode="r"), {index[s]: r for r, s in enumerate(info["stems"])}, info)


@torch.inference_mode()
def soft_labels(teachers: list[Teacher], family_weights: dict[str, float], ds: Dataset, indices,
                cache_dir: Path, device_name: str = "auto", batch_size: int = 16) -> SoftLabels:
    """Flip-TTA ensemble probabilities of ``teachers`` (weights per family) on the images
    ``indices`` of ``ds``, cached as float16 log-probabilities in ``cache_dir``."""
    indices = np.asarray(indices, dtype=np.int64)
    weights = teacher_weights(teachers, family_weights)
    path = cache_dir / f"soft_{cache_key(teachers, weights, ds, indices)}.npy"
    if path.exists() and path.with_suffix(".json").exists():
        console.print(f"soft labels from cache {path}")
        return open_cache(path, ds)
    size = ds.images.shape[1]
    check_input_size(teachers, size)
    device = resolve_device(device_name)
    models = load_teaching_models(teachers, weights, device)
    console.print(f"soft labels on {len(indices)} images from {describe_teachers(teachers, weights)}")
    C = ds.schema.num_classes
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(cache_dir)  # what a killed run left
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(indices), size, size, C))
    finite = True
    for start in range(0, len(indices), batch_size):
        images = ds.images[indices[start:start + batch_size]]
        acc = ensemble_probs(models, images, ds.schema.flip_permutation, device).cpu()
        finite &= bool(torch.isfinite(acc).all())
        out[start:start + len(images)] = acc.clamp_min(LOG_FLOOR).log().permute(0, 2, 3, 1).numpy().astype(np.float16)
    out.flush()
    del out
    if not finite:
        tmp.unlink()
        raise DistillError("a teacher produced non-finite probabilities (a diverged model?); "
                           f"teachers: {describe_teachers(teachers, weights)}")
    info = {"kind": "log_probs", "dtype": "float16", "temperature": 1.0, "image_size": int(size),
            "stems": [ds.stems[i] for i in indices], "family_weights": family_weights,
            "teachers": teacher_records(teachers, weights)}
    path.with_suffix(".json").write_text(json.dumps(info, indent=1))
    tmp.replace(path)
    console.print(f"soft labels cached in {path} ({path.stat().st_size / 2**20:.0f} MB)")
    return open_cache(path, ds)


def confidence_summary(soft, masks, sample: int = 64) -> dict:
    """What the teachers' probabilities look like on (a sample of) the student's training images
    (``soft``: a :class:`SoftLabels` or anything with its ``rows`` and ``[dataset index] -> (H, W, C)
    probabilities``, such as :class:`~.online_teacher.Preview`; ``masks[dataset index]``: the labels):
    mean top-1 probability, share of pixels above 0.99, mean second-best probability, mean entropy
    (nats), and top-1 agreement with the hard labels. Printed before the student trains; the KD
    temperature is chosen from it."""
    rows = sorted(soft.rows)[:: max(1, len(soft.rows) // sample)]
    top1, top2, ent, agree, confident = [], [], [], [], []
    for i in rows:
        p = soft[i]
        p = p.reshape(-1, p.shape[-1])
        s = np.sort(p, axis=1)
        top1.append(s[:, -1].mean())
        top2.append(s[:, -2].mean())
        confident.append((s[:, -1] > 0.99).mean())
        ent.append(-(p * np.log(np.clip(p, 1e-12, 1))).sum(1).mean())
        agree.append((p.argmax(1) == masks[i].reshape(-1)).mean())
    return {"images": len(rows), "top1": float(np.mean(top1)), "top2": float(np.mean(top2)),
            "share_above_0.99": float(np.mean(confident)), "entropy": float(np.mean(ent)),
            "agreement_with_labels": float(np.mean(agree))}
