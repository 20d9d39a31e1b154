"""Out-of-fold (OOF) probabilities of a finished training fold, stored compactly for distillation
and analysis.

Layout inside a run folder (``runs/<name>/fold<k>/``):

- ``oof_probs.npy``       uint8 (N, C, S, S): softmax probabilities x 255 on the held-out images, at
                          the training resolution S (images squashed to S x S as in training);
- ``oof_probs_flip.npy``  the same for the mirrored images, un-flipped and channel-permuted, so that
                          flip-TTA probabilities are the mean of the two arrays;
- ``oof.json``            {"stems": [...], "schema": {...}, "image_size": S, "fold": k}, plus
                          ``"model_sha1"`` (the SHA-1 of the model file) when distillation rebuilt
                          them from a teacher file, so that a changed file is noticed.

Arrays are opened memory-mapped, so reading a fold costs no RAM until used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.atomic import atomic_write
from ..core.schema import ClassSchema


@dataclass
class OOF:
    stems: list[str]
    schema: ClassSchema
    image_size: int
    fold: int
    probs: np.ndarray       # uint8 (N, C, S, S), memory-mapped
    probs_flip: np.ndarray  # uint8 (N, C, S, S), memory-mapped

    def views(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """float32 (C, S, S) probabilities of image i and of its mirror (un-flipped, channel-permuted);
        their flip-TTA mean is :func:`workbench.inference.tta.merge_views`."""
        return self.probs[i].astype(np.float32) / 255.0, self.probs_flip[i].astype(np.float32) / 255.0


def to_uint8(probs: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(probs * 255.0), 0, 255).astype(np.uint8)


def save_oof(run_dir: str | Path, stems: list[str], schema: ClassSchema, image_size: int, fold: int,
             probs: np.ndarray, probs_flip: np.ndarray, model_sha1: str | None = None) -> None:
    run_dir = Path(run_dir)
    for name, arr in (("oof_probs.npy", probs), ("oof_probs_flip.npy", probs_flip)):
        atomic_write(run_dir / name, lambda tmp, arr=arr: np.save(tmp, arr))
    info = {"stems": list(stems), "schema": schema.to_dict(), "image_size": int(image_size), "fold": int(fold)}
    if model_sha1:
        info["model_sha1"] = model_sha1
    atomic_write(run_dir / "oof.json", json.dumps(info, indent=1))


def oof_model_sha1(run_dir: str | Path) -> str | None:
    """SHA-1 of the model file the OOF predictions were rebuilt from; None when the training run wrote
    them itself (beside the model file it exported: a new training run rewrites both)."""
    return json.loads((Path(run_dir) / "oof.json").read_text()).get("model_sha1")


def has_oof(run_dir: str | Path) -> bool:
    run_dir = Path(run_dir)
    return all((run_dir / n).exists() for n in ("oof.json", "oof_probs.npy", "oof_probs_flip.npy"))


def load_oof(run_dir: str | Path) -> OOF:
    run_dir = Path(run_dir)
    if not has_oof(run_dir):
        raise FileNotFoundError(f"{run_dir}: no out-of-fold predictions (oof.json, oof_probs*.npy); "
                                "has this fold finished training?")
    info = json.loads((run_dir / "oof.json").read_text())
    return OOF(stems=info["stems"], schema=ClassSchema.from_dict(info["schema"]),
               image_size=info["image_size"], fold=info["fold"],
               probs=np.load(run_dir / "oof_probs.npy", mmap_mode="r"),
               probs_flip=np.load(run_dir / "oof_probs_flip.npy", mmap_mode="r"))
