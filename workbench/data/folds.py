"""Deterministic, stratified k-fold assignment, written once per dataset and read by training,
distillation and analysis alike.

Stratification: each image is labelled by the rarest class it contains (rarity = number of images
containing the class), and scikit-learn's StratifiedKFold spreads those labels over the folds, so
rare parts (lights, mirrors, tailgates) reach every validation fold. Singleton labels fall back to
the next rarer-but-frequent class so StratifiedKFold never sees a label with fewer than k members.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from ..core.atomic import atomic_write
from ..exceptions import ConfigError


def stratify_labels(masks: list[np.ndarray] | np.ndarray, num_classes: int, k: int) -> np.ndarray:
    present = np.stack([np.bincount(m.reshape(-1), minlength=num_classes)[:num_classes] > 0 for m in masks])
    counts = present.sum(0)
    labels = np.empty(len(present), dtype=np.int64)
    for i, row in enumerate(present):
        candidates = [c for c in np.flatnonzero(row) if counts[c] >= k] or [0]
        labels[i] = min(candidates, key=lambda c: (counts[c], c))
    return labels


def make_folds(stems: list[str], masks, num_classes: int, k: int = 5, seed: int = 0) -> dict[str, int]:
    if len(stems) < k:
        raise ConfigError(f"{len(stems)} images cannot make {k} folds")
    labels = stratify_labels(masks, num_classes, k)
    _, label_counts = np.unique(labels, return_counts=True)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    if label_counts.min() < k:  # degenerate tiny datasets: plain shuffled k-fold
        labels = np.zeros(len(stems), dtype=np.int64)
    folds = {}
    for f, (_, val) in enumerate(splitter.split(np.zeros(len(stems)), labels)):
        for i in val:
            folds[stems[i]] = f
    return dict(sorted(folds.items()))


def default_folds_path(data_dir: str | Path, stems: list[str], k: int, seed: int) -> Path:
    """runs/folds/<dataset>-<hash of its stems>-k<k>-s<seed>.json"""
    digest = hashlib.sha1("\n".join(sorted(stems)).encode()).hexdigest()[:8]
    return Path("runs") / "folds" / f"{Path(data_dir).resolve().name}-{digest}-k{k}-s{seed}.json"


# the tail of the name above, read back by folds_seed (change both together; tests/test_data.py checks they agree)
_DEFAULT_NAME = re.compile(r"-[0-9a-f]{8}-k(\d+)-s(\d+)\.json$")


def write_folds(path: str | Path, folds: dict[str, int], k: int, seed: int) -> None:
    atomic_write(path, json.dumps({"k": k, "seed": seed, "folds": folds}, indent=1))


def read_folds(path: str | Path) -> tuple[dict[str, int], int]:
    """(stem -> fold, k) of a folds file; :class:`ConfigError` for one that is not a readable folds file."""
    try:
        d = json.loads(Path(path).read_text())
        return {str(s): int(f) for s, f in d["folds"].items()}, int(d["k"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"folds file {path} is not readable ({type(err).__name__}: {err}); point folds_file= "
                          "at a folds file or leave it empty to create one") from err


def get_folds(path: str | Path, stems: list[str], masks, num_classes: int, k: int, seed: int) -> dict[str, int]:
    """Read the folds file if it exists (checking it covers exactly ``stems``), else create it."""
    path = Path(path)
    if path.exists():
        folds, k_file = read_folds(path)
        if set(folds) != set(stems) or k_file != k:
            raise ConfigError(f"{path} was written for another dataset or k={k_file}; "
                             "delete it or point folds_file elsewhere")
        return folds
    folds = make_folds(stems, masks, num_classes, k, seed)
    write_folds(path, folds, k, seed)
    return folds


def folds_seed(cfg: dict, path: str | Path | None = None) -> int:
    """The seed that draws the k-fold split: ``folds_seed``, or the run's ``seed`` when it is -1 (or absent,
    in configs written before the key existed). A folds file ``path`` named like :func:`default_folds_path`
    (``...-k<k>-s<N>.json``) was drawn with seed N: a missing one is rebuilt from N, not from the run's
    seed (a replicate run, or a published teacher whose config names the file, on a new machine), and
    an explicit ``folds_seed`` that contradicts the name is an error."""
    seed = cfg.get("folds_seed", -1)
    explicit = seed is not None and seed >= 0
    seed = seed if explicit else cfg["seed"]
    match = _DEFAULT_NAME.search(Path(path).name) if path else None
    if match and int(match.group(2)) != seed:
        if explicit:
            raise ConfigError(f"folds_file {path} holds the split of seed {match.group(2)}, but folds_seed={seed}; "
                              "set one of them")
        seed = int(match.group(2))
    return seed


def split_for(cfg: dict, ds) -> tuple[np.ndarray, np.ndarray, Path]:
    """(train indices, held-out indices, folds file) of ``cfg['fold']`` over dataset ``ds``;
    fold -1 trains on everything."""
    seed = folds_seed(cfg, cfg["folds_file"] or None)
    path = Path(cfg["folds_file"]) if cfg["folds_file"] else default_folds_path(cfg["data"], ds.stems, cfg["folds"], seed)
    folds = get_folds(path, ds.stems, ds.masks, ds.schema.num_classes, cfg["folds"], seed)
    assigned = np.array([folds[s] for s in ds.stems])
    if cfg["fold"] < 0:
        return np.arange(len(ds)), np.array([], dtype=np.int64), path
    return np.flatnonzero(assigned != cfg["fold"]), np.flatnonzero(assigned == cfg["fold"]), path
