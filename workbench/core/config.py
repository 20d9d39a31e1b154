"""Recipes: YAML files in ``recipes/`` with ``key=value`` overrides from the command line.

A recipe may name a ``base`` recipe whose values it extends. Every key must be one of
:data:`DEFAULTS`; values are parsed as YAML and checked against the default's type, so
``epochs=ten`` or ``lr=fast`` fail with a message instead of deep inside training.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..exceptions import ConfigError

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"

DEFAULTS: dict = {
    # what and where
    "name": "run",                 # run name; outputs go to runs/<name>/fold<fold>
    "family": "",                  # teacher family, for grouping in distillation reports
    "data": "../shared/datasets/dsmlr-carparts",
    "out": "",                     # run folder; empty = runs/<name>/fold<fold>
    "folds": 5,                    # k of the k-fold split
    "fold": 0,                     # held-out fold; -1 = train on all images, no validation
    "folds_file": "",              # empty = runs/folds/<dataset>-<hash>-k<k>-s<seed>.json
    "seed": 0,
    # model
    "arch": "unet",                # any smp architecture: unet, fpn, unetplusplus, deeplabv3plus, ...
    "encoder": "tf_efficientnet_lite0",  # any timm model name
    "encoder_weights": "imagenet",       # imagenet | /path/to/weights | none
    "image_size": 256,             # images are held in RAM squashed to this square size; validation,
                                   # OOF, soft labels and inference run on the whole image at this size
    "crop_size": 0,                # train on random crop_size x crop_size crops of the image_size image; 0 = whole image
    "decoder_channels": [],        # decoder widths: unet = one per stage, fpn = [pyramid, segmentation]; [] = smp default
    "normalization": "imagenet",   # imagenet | unit (x/255)
    # optimisation
    "epochs": 10,
    "batch_size": 8,
    "lr": 1.0e-3,
    "decoder_lr_mult": 1.0,        # learning rate of the randomly initialised decoder + head = lr * this
    "weight_decay": 1.0e-4,
    "warmup_epochs": 1.0,
    "loss": "ce_dice",             # ce_dice | bce_dice | ce
    "dice_weight": 1.0,
    "augment": "standard",         # none | flip | standard
    "precision": "auto",           # auto (bf16 autocast on CUDA and on CPUs with native bf16, else fp32) | bf16 | fp32
    "device": "auto",              # auto | cpu | cuda
    "threads": 0,                  # CPU threads; 0 = torch default
    "max_steps": 0,                # stop after this many optimiser steps (smoke tests); 0 = no limit
    "save_oof": True,              # write out-of-fold probabilities of the held-out fold
    # distillation (distill.py)
    "teachers": [],                # run names (runs/<name>/fold*) whose ensemble teaches the student
    "teacher_folds": [0, 1, 2],    # folds every teacher must have finished
    "temperature": 2.0,
    "kd_weight": 0.7,              # loss = kd_weight * T^2 * KL(teacher_T || student_T) + (1 - kd_weight) * hard loss
    "family_max_gap": 0.03,        # a teacher family more than this OOF mIoU below the best family does not teach
    "export": "",                  # exported student; empty = runs/<name>/student.safetensors (ship: export=weights/student.safetensors)
    "export_dtype": "float16",     # float16 halves the file; inference runs in float32
}
NULLABLE: set[str] = set()



def _check_type(key: str, value):
    default = DEFAULTS[key]
    if value is None and key in NULLABLE:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r}: expected an integer")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r}: expected a number")
        value = float(value)
    elif isinstance(default, list):
        if not isinstance(value, list):
            value = [value]
    elif isinstance(default, str):
        value = "none" if value is None else str(value)
    return value


def _merge(cfg: dict, updates: dict, source: str) -> dict:
    for key, value in updates.items():
        if key not in DEFAULTS:
            raise ConfigError(f"{source}: unknown key {key!r}. Known keys: {', '.join(sorted(DEFAULTS))}")
        cfg[key] = _check_type(key, value)
    return cfg


def load_recipe(name_or_path: str, _seen: tuple = ()) -> dict:
    path = Path(name_or_path)
    if not path.suffix:
        path = RECIPES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
        raise ConfigError(f"recipe {name_or_path!r} not found ({path}); recipes: {known}")
    if path in _seen:
        raise ConfigError(f"recipe {path} includes itself through 'base'")
    try:
        body = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from err
    base = body.pop("base", None)
    cfg = load_recipe(base, _seen + (path,)) if base else dict(DEFAULTS)
    return _merge(cfg, body, str(path))


def parse_overrides(args: list[str]) -> tuple[str | None, dict]:
    recipe, overrides = None, {}
    for arg in args:
        key, sep, raw = arg.partition("=")
        key = key.lstrip("-").strip()
        if not sep or not key:
            raise ConfigError(f"argument {arg!r}: expected key=value, e.g. recipe=teacher_fold0 epochs=1")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"argument {arg!r}: cannot parse value: {err}") from err
        if key == "recipe":
            recipe = str(value)
        else:
            overrides[key] = value
    return recipe, overrides


def resolve(args: list[str], default_recipe: str | None = None) -> dict:
    """The fully resolved config of ``recipe=<name> key=value ...``."""
    recipe, overrides = parse_overrides(args)
    recipe = recipe or default_recipe
    cfg = load_recipe(recipe) if recipe else dict(DEFAULTS)
    cfg = _merge(cfg, overrides, "command line")
    cfg["recipe"] = recipe or ""
    if not cfg["out"]:
        cfg["out"] = str(Path("runs") / cfg["name"] / ("full" if cfg["fold"] < 0 else f"fold{cfg['fold']}"))
    if cfg["fold"] >= cfg["folds"]:
        raise ConfigError(f"fold={cfg['fold']} but folds={cfg['folds']} (valid: 0..{cfg['folds'] - 1}, or -1 for all)")
    for key, allowed in (("loss", {"ce_dice", "bce_dice", "ce"}), ("augment", {"none", "flip", "standard"}),
                         ("precision", {"auto", "bf16", "fp32"}), ("device", {"auto", "cpu", "cuda"}),
                         ("normalization", {"imagenet", "unit"})):
        if cfg[key] not in allowed:
            raise ConfigError(f"{key}={cfg[key]!r}: choose one of {sorted(allowed)}")
    for key in ("epochs", "batch_size", "image_size", "folds"):
        if cfg[key] < 1:
            raise ConfigError(f"{key}={cfg[key]}: must be at least 1")
    if cfg["crop_size"] < 0 or cfg["crop_size"] > cfg["image_size"]:
        raise ConfigError(f"crop_size={cfg['crop_size']}: must be 0 (no crop) or at most image_size={cfg['image_size']}")
    if cfg["decoder_lr_mult"] <= 0:
        raise ConfigError(f"decoder_lr_mult={cfg['decoder_lr_mult']}: must be positive")
    return cfg


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
