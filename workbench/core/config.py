"""Recipes: YAML files in ``recipes/`` with ``key=value`` overrides from the command line.

A recipe may name a ``base`` recipe whose values it extends. Every key must be one of
:data:`DEFAULTS`; values are parsed as YAML and converted by the key's :func:`field_of` (its
default's type plus the ranges and choices of :data:`RULES`, see :mod:`workbench.core.typed`): ``lr=1e-4``
is a number although YAML reads it as text, ``save_oof="false"`` is an error rather than true, and
``epochs=ten``, ``fold=-5`` or ``image_size=100`` fail with a message instead of deep inside training.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..exceptions import ConfigError
from .limits import INPUT_MULTIPLE, MAX_INPUT_SIZE
from .typed import Field

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"

DEFAULTS: dict = {
    # what and where
    "name": "run",                 # run name; outputs go to runs/<name>/fold<fold>
    "family": "",                  # teacher family, for grouping in distillation reports
    "data": "../shared/datasets/dsmlr-carparts",
    "out": "",                     # run folder; empty = runs/<name>/fold<fold>
    "folds": 5,                    # k of the k-fold split
    "fold": 0,                     # held-out fold; -1 = train on all images, no validation
    "folds_file": "",              # empty = runs/folds/<dataset>-<hash>-k<k>-s<folds seed>.json
    "seed": 0,                     # initialisation, augmentation and batch order; also the split unless folds_seed is set
    "folds_seed": -1,              # seed of the k-fold split; -1 = seed. A replicate run keeps fold k's images
                                   # with seed=1 folds_seed=0 (the folds file is rebuilt from it on a new machine)
    # model
    "arch": "unet",                # any smp architecture: unet, fpn, unetplusplus, deeplabv3plus, ...
    "encoder": "tf_efficientnet_lite0",  # any timm model name
    "encoder_weights": "imagenet",       # imagenet | /path/to/weights | none
    "init_from": "",               # a model file (same network and fold, any input size) whose weights start
                                   # this run instead (progressive resizing); '' = encoder_weights + random decoder
    "image_size": 256,             # images are held in RAM squashed to this square size; validation,
                                   # OOF, soft labels and inference run on the whole image at this size
    "crop_size": 0,                # train on random crop_size x crop_size crops of the image_size image; 0 = whole image
    "decoder_channels": [],        # decoder widths: unet = one per stage, fpn = [pyramid, segmentation]; [] = smp default
    "head_scale": 1,               # unet: the decoder stops at 1/head_scale (1, 2, 4), logits upsampled bilinearly
    "deep_supervision": [],        # unet: loss weights of auxiliary heads on the decoder stages before the last
                                   # (nearest first), e.g. [0.5, 0.25]; [] = off. Training only.
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
    "workers": 0,                  # DataLoader processes augmenting training batches (a GPU waits on one CPU
                                   # core otherwise); 0 = in the training process
    "max_steps": 0,                # stop after this many optimiser steps (smoke tests); 0 = no limit
    "save_oof": True,              # write out-of-fold probabilities of the held-out fold
    "val_every": 1,                # validate on the held-out fold every N epochs and after the last; the best
                                   # weights are chosen among the validated epochs
    # folds as cluster jobs (train.py; workbench/training/launch.py): each fold runs as the command
    # `python train.py <same arguments> fold=<k>`, one job each, in its own run folder with a done marker
    "launcher": "none",            # none = train here | local = jobs on this machine | slurm = one SLURM job array (submitit)
    "folds_to_run": [],            # folds sent as jobs: [0, 2, 4] or "0-4"; [] = just `fold`
    "partition": "",               # SLURM partition; empty = the cluster's default
    "gpus_per_job": 1,             # GPUs per job (0 = CPU only); more than 1 runs each fold with torchrun (DDP) over them
    "cpus_per_job": 4,             # CPU cores per job (SLURM cpus-per-task)
    "job_minutes": 1440,           # time limit of each job
    "jobs_parallel": 0,            # jobs running at once: slurm 0 = no limit; local 0 = one at a time
    "sbatch_options": [],          # extra SLURM options, e.g. [account=foo, qos=high, mem=64G]
    # distillation (distill.py)
    "teachers": [],                # run names (runs/<name>/fold*) whose ensemble teaches the student
    "teacher_folds": [0, 1, 2],    # folds every teacher must have finished; the final student learns from all of them
    "cv_folds": [],                # folds distill.py --cv cross-validates the student on; [] = teacher_folds
    "twin": "",                    # recipe whose fold-k run (here or published) is student fold k's hard-label twin; '' = a teacher's or a new one
    "temperature": 2.0,
    "kd_weight": 0.7,              # loss = kd_weight * T^2 * KL(teacher_T || student_T) + (1 - kd_weight) * hard loss
    "kd_loss": "pixel",            # pixel: KL per pixel over classes; channel: KL per class over pixels (channel-wise KD)
    "kd_mix": "convex",            # convex: as above; additive: hard loss + kd_weight * T^2 * KL (CE and Dice keep full weight)
    "kd_targets": "cached",        # cached: teachers' soft labels of the clean images, warped and cropped with them;
                                   # online: the teachers run on each augmented batch the student sees (no cache)
    "family_max_gap": 0.03,        # a teacher family more than this OOF mIoU below the best family does not teach
    "exclusive_parts": [],         # candidate groups of parts a photo shows at most one of, e.g. [[tailgate, trunk]]:
                                   # kept in the model file where merging them raises OOF mIoU (groups naming parts
                                   # the dataset lacks are skipped; the training masks must never hold two of one)
    "postprocess": True,           # choose flip TTA, exclusive groups and cleanup on OOF (false: skip the choice, which
                                   # runs on the CPU; the file gets flip TTA and no cleanup, to be chosen later with
                                   # distill.py --postprocess)
    "export": "",                  # exported student; empty = runs/<name>/student.safetensors (ship: export=weights/student.safetensors)
    "export_dtype": "float16",     # float16 halves the file; inference runs in float32
}
NULLABLE: set[str] = set()

# What each key may hold beyond its default's type (workbench.core.typed: numbers in any YAML spelling,
# booleans only as booleans, ranges and choices). Keys not listed here are checked by type only.
_INT, _NUM = Field(int, lo=0), Field(float, lo=0)
RULES: dict[str, Field] = {
    "folds": Field(int, lo=2, hi=100),
    "fold": Field(int, lo=-1),                       # -1: all images, no validation; < folds (checked in resolve)
    "seed": _INT,
    "folds_seed": Field(int, lo=-1),
    "image_size": Field(int, lo=INPUT_MULTIPLE, hi=MAX_INPUT_SIZE, multiple=INPUT_MULTIPLE),
    "crop_size": Field(int, lo=0, hi=MAX_INPUT_SIZE, multiple=INPUT_MULTIPLE),
    "decoder_channels": Field(list, hi=8, item=Field(int, lo=1, hi=4096)),
    "head_scale": Field(int, choices=(1, 2, 4)),
    "deep_supervision": Field(list, hi=4, item=Field(float, lo=0, hi=10)),
    "normalization": Field(str, choices=("imagenet", "unit")),
    "epochs": Field(int, lo=1, hi=100_000),
    "batch_size": Field(int, lo=1, hi=4096),
    "lr": Field(float, above=0),
    "decoder_lr_mult": Field(float, above=0),
    "weight_decay": _NUM,
    "warmup_epochs": _NUM,
    "loss": Field(str, choices=("ce_dice", "bce_dice", "ce")),
    "dice_weight": _NUM,
    "augment": Field(str, choices=("none", "flip", "standard")),
    "precision": Field(str, choices=("auto", "bf16", "fp32")),
    "device": Field(str, choices=("auto", "cpu", "cuda")),
    "threads": _INT,
    "workers": Field(int, lo=0, hi=64),
    "val_every": Field(int, lo=1, hi=100_000),
    "max_steps": _INT,
    "teachers": Field(list, item=Field(str)),
    "teacher_folds": Field(list, item=_INT),
    "cv_folds": Field(list, item=_INT),
    "twin": Field(str),
    "init_from": Field(str),
    "temperature": Field(float, above=0),
    "kd_weight": Field(float, lo=0, hi=1),
    "kd_mix": Field(str, choices=("convex", "additive")),
    "kd_loss": Field(str, choices=("pixel", "channel")),
    "kd_targets": Field(str, choices=("cached", "online")),
    "family_max_gap": _NUM,
    "exclusive_parts": Field(list, item=Field(list, lo=2, item=Field(str), scalar_to_list=False)),
    "export_dtype": Field(str, choices=("float16", "float32", "bfloat16")),
    "launcher": Field(str, choices=("none", "local", "slurm")),  # the engines of workbench.training.launch
    "gpus_per_job": _INT,
    "cpus_per_job": Field(int, lo=1),
    "job_minutes": Field(int, lo=1),
    "jobs_parallel": _INT,
    "sbatch_options": Field(list, item=Field(str)),
}
_KINDS = ((bool, bool), (int, int), (float, float), (list, list), (str, str))


def field_of(key: str) -> Field:
    """The :class:`~workbench.core.typed.Field` a config key's values are checked with."""
    if key in RULES:
        return RULES[key]
    return Field(next(kind for t, kind in _KINDS if isinstance(DEFAULTS[key], t)))


def _check_type(key: str, value):
    if value is None and key in NULLABLE:
        return value
    field = field_of(key)
    if value is None and field.kind is str:
        return "none"
    try:
        return field.convert(value)
    except ValueError as err:
        raise ConfigError(f"{key}={value!r}: {err}") from None


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
    if not isinstance(body, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of key: value lines, got {type(body).__name__}")
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
    if cfg["crop_size"] > cfg["image_size"]:
        raise ConfigError(f"crop_size={cfg['crop_size']}: must be 0 (no crop) or at most image_size={cfg['image_size']}")
    return cfg


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
