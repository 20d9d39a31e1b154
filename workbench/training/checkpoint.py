"""Checkpoints of a training run and when a run may resume from them.

``<out>/last.pt`` (written atomically after every finished epoch) holds ``model``, ``optimizer`` and
``scheduler`` state dicts, the resolved ``config`` and the run ``state`` as a JSON string (epoch,
step, best_miou, best_epoch, history); ``<out>/best_state.pt`` the weights of the best epoch so far.
Both load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..core import config as config_mod
from ..core.atomic import atomic_write
from ..exceptions import CheckpointError, ConfigError

LAST, BEST = "last.pt", "best_state.pt"

# Keys that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = {"epochs", "threads", "workers", "val_every", "device", "max_steps", "save_oof", "recipe",
                     "export", "export_dtype", "family_max_gap", "exclusive_parts", "postprocess",  # these only matter after training
                     "cv_folds", "twin",  # which folds distill.py cross-validates and against what, not what one fold's student learns
                     "launcher", "folds_to_run", "partition", "gpus_per_job", "cpus_per_job", "job_minutes",
                     "jobs_parallel", "sbatch_options"}  # how folds are sent as jobs, not what they train


def config_changes(old: dict, new: dict) -> list[str]:
    """Keys whose change forbids resuming a checkpoint written with config ``old``. A key that the
    checkpoint's code did not know yet counts as unchanged while it holds its default value."""
    diff = []
    for key in sorted(set(old) | set(new)):
        if key in RESUMABLE_CHANGES:
            continue
        default = config_mod.DEFAULTS.get(key)
        before = old.get(key, default)
        if before != new.get(key, default):
            diff.append(key)
    return diff


def new_state() -> dict:
    return {"epoch": 0, "step": 0, "best_miou": -1.0, "best_epoch": 0, "history": []}


def load_checkpoint(out: Path, cfg: dict) -> dict | None:
    """``out``'s last.pt with its ``state`` parsed, or None if there is none; :class:`ConfigError`
    if it was written with a config that cannot be resumed with ``cfg`` (the message names the keys)."""
    path = out / LAST
    if not path.exists():
        return None
    ckpt = _load(path, ("model", "optimizer", "scheduler", "config", "state"))
    diff = config_changes(ckpt["config"], cfg)
    if diff:
        raise ConfigError(f"{out} holds a checkpoint of a different config (differs in {diff}); "
                          "use another out=... or delete the folder")
    try:
        return dict(ckpt, state=json.loads(ckpt["state"]))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: the run state in the checkpoint is unreadable ({err}); delete {path} "
                              "to start the run over, or use another out=...") from err


def save_checkpoint(out: Path, model, optimizer, scheduler, cfg: dict, state: dict) -> None:
    ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "config": cfg, "state": json.dumps(state)}
    atomic_write(out / LAST, lambda p: torch.save(ckpt, p))


def load_best(out: Path) -> dict | None:
    path = out / BEST
    return _load(path) if path.exists() else None


def save_best(out: Path, state_dict: dict) -> None:
    atomic_write(out / BEST, lambda p: torch.save(state_dict, p))


def _load(path: Path, keys: tuple[str, ...] = ()) -> dict:
    """``torch.load`` of a checkpoint (weights only), :class:`CheckpointError` if the file is truncated,
    corrupted or lacks ``keys``."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError, ... on bad files
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(err).__name__}: {str(err)[:200]}); delete "
                              "it to start the run over (or restore it), or use another out=...") from err
    missing = [k for k in keys if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is not a checkpoint of this workbench (lacks {missing}); delete it to start "
                              "the run over, or use another out=...")
    return ckpt
