"""Warm start: a run's network initialised from an earlier run's model file (``init_from=``).

The use is progressive resizing: a model trained at one input size goes on training at a larger
one (networks do best at the resolution they last trained on), for a fraction of the epochs a run
from ImageNet weights would need there. The optimiser, the schedule and the epoch count start
afresh; only the weights carry over.

The file must describe the same network and classes (its input size may differ), and it must have
been trained on this run's training images: a fold-k run starts only from a fold-k model file of
the same split, because any other model (the final one of fold -1 above all) has seen some of
fold k's held-out images and would leak them into the out-of-fold estimate. Deep-supervision heads,
which model files do not keep, start from their random initialisation.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.schema import ClassSchema
from ..exceptions import ConfigError, ModelFileError
from ..models.deep_supervision import TRAINING_ONLY_PREFIX
from ..models.modelfile import model_metadata, network_differences, read_metadata, read_weights
from .done import sha1


def check_same_images(cfg: dict, theirs: dict, path: Path, folds_file: str = "") -> None:
    """Refuse a model file trained on other images than the run ``cfg`` trains on (see the module);
    ``folds_file``: this run's split file, where ``cfg`` leaves it to the default."""
    fold, their_fold = int(cfg["fold"]), int(theirs.get("fold", -1))
    if fold != their_fold:
        raise ConfigError(f"init_from={path}: a model of fold={their_fold} cannot start a run of fold={fold} "
                          "(it was trained on other images; a model that has seen this fold's held-out "
                          f"images would leak them into its out-of-fold score): use a model file of fold={fold}")
    if fold >= 0:
        ours = Path(folds_file or cfg.get("folds_file") or "").name
        their_split = Path(theirs.get("folds_file") or (theirs.get("recipe") or {}).get("folds_file") or "").name
        if ours and their_split and ours != their_split:
            raise ConfigError(f"init_from={path}: trained on the split {their_split}, this run uses {ours}: "
                              "its fold holds other images")


def warm_start(model: torch.nn.Module, cfg: dict, schema: ClassSchema, folds_file: str = "") -> dict:
    """Load ``cfg['init_from']`` into ``model`` after the checks above; returns what the new model
    file records of it (path, SHA-1, name, fold, input size, scores)."""
    path = Path(cfg["init_from"])
    try:
        theirs = read_metadata(path)
    except ModelFileError as err:
        raise ConfigError(f"init_from: {err}") from err
    differ = network_differences(model_metadata(cfg, schema), theirs, ignore=("input_size",))
    if differ:
        raise ConfigError(f"init_from={path} is another network ({', '.join(differ)} differ: "
                          f"{theirs['arch']}/{theirs['encoder']}, this run {cfg['arch']}/{cfg['encoder']})")
    check_same_images(cfg, theirs, path, folds_file)
    try:
        state = read_weights(path)
    except ModelFileError as err:
        raise ConfigError(f"init_from: {err}") from err
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(TRAINING_ONLY_PREFIX)]
    if missing or unexpected:
        raise ConfigError(f"init_from={path}: weights do not fit this network "
                          f"(missing {missing[:3]}, unexpected {list(unexpected)[:3]})")
    return {"path": str(path), "sha1": sha1(path), "name": theirs.get("name"), "fold": theirs.get("fold"),
            "input_size": theirs["input_size"], "metrics": theirs.get("metrics", {})}
