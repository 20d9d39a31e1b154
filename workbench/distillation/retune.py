"""Choose an existing model file's post-processing again, on the out-of-fold predictions of runs of
its recipe, and rewrite only that part of its metadata (``python distill.py --postprocess``).

``distill.py`` chooses flip TTA, exclusive part groups and cleanup thresholds once, on the OOF
predictions it has when it exports (the student's ``--cv`` folds, or the best family's). When more
folds of the same recipe finish later, the choice can be made again on more held-out images, and
cross-fitted, without retraining the model: the file keeps its weights byte for byte, and its
metadata records what the new choice was made on, the ablation, and the settings it replaced.

The runs must be of the file's architecture, encoder, input size and schema: post-processing
chosen on another model's errors is a proxy, which ``analysis.postprocessing`` can measure but this
tool does not write into a model file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from ..core import config as config_mod
from ..core import provenance
from ..core.cli import ArgumentParser
from ..core.console import console
from ..core.schema import ClassSchema
from ..data import load_dataset
from ..evaluation.sources import discover_folds
from ..exceptions import DistillError
from ..models.modelfile import read_metadata, update_metadata
from ..training.oof import load_oof
from .ensemble import gather_oof
from .postprocessing import choose_postprocessing, describe_postprocessing, exclusive_candidates

POSTPROCESSING_KEYS = ("tta", "exclusive", "cleanup")
USAGE = """python distill.py --postprocess FILE RUN [RUN ...] [--dry-run] [recipe=NAME] [key=value ...]

Choose FILE's post-processing (flip TTA, exclusive part groups, cleanup thresholds) again on the
out-of-fold predictions of RUN (a run folder: all its finished folds; or one fold folder), cross-fitted
when they span two folds or more, and rewrite FILE's metadata with it (weights unchanged).

  python distill.py --postprocess weights/student.safetensors runs/unet_effnet_ds_e64
  python distill.py --postprocess weights/student.safetensors runs/unet_effnet_ds_e64/fold0 \\
      runs/unet_effnet_ds_e64/fold1 --dry-run

The candidate exclusive groups are the recipe's exclusive_parts (by default the recipe named in
FILE's metadata; recipe= or exclusive_parts=[[a,b]] override it); the dataset is the one the runs
were trained on (data= overrides it)."""


def run_config(fold_dir: Path) -> dict:
    path = fold_dir / "config.yaml"
    if not path.is_file():
        raise DistillError(f"{fold_dir}: no config.yaml, so not a training run of this workbench")
    return yaml.safe_load(path.read_text()) or {}


def check_runs(meta: dict, fold_dirs: list[Path], model_path: str) -> list[dict]:
    """The runs' configs, after checking that each run is of the file's model (architecture,
    encoder, input size, schema) and that no two of them hold the same held-out images."""
    configs, seen = [], {}
    schema = ClassSchema.from_dict(meta["schema"])
    for d in fold_dirs:
        cfg = run_config(d)
        theirs = (cfg.get("arch"), cfg.get("encoder"), cfg.get("image_size"))
        ours = (meta["arch"], meta["encoder"], meta["input_size"][0])
        if theirs != ours:
            raise DistillError(f"{d} trained {theirs[0]}/{theirs[1]} at {theirs[2]} px, {model_path} is "
                               f"{ours[0]}/{ours[1]} at {ours[2]} px: choose post-processing on runs of the file's "
                               "own recipe (analysis.postprocessing measures a proxy without writing it)")
        oof = load_oof(d)
        if oof.schema != schema:
            raise DistillError(f"{d} predicts other classes than {model_path}: {list(oof.schema.names)}")
        shared = seen.keys() & set(oof.stems)
        if shared:
            raise DistillError(f"{d} and {seen[next(iter(shared))]} both hold out {len(shared)} images "
                               f"({sorted(shared)[:3]}): give one run per fold")
        seen.update(dict.fromkeys(oof.stems, d))
        configs.append(cfg)
    return configs


def candidate_recipe(meta: dict, overrides: list[str]) -> dict:
    """The recipe whose ``exclusive_parts`` are tried: ``recipe=`` on the command line, else the
    one FILE was made by if it is still in recipes/, else distill.py's default, with the overrides."""
    named, _ = config_mod.parse_overrides(overrides)
    own = str((meta.get("recipe") or {}).get("recipe") or "")
    if not named and own and (config_mod.RECIPES_DIR / f"{own}.yaml").is_file():
        return config_mod.resolve(overrides, default_recipe=own)
    return config_mod.resolve(overrides, default_recipe="student")


def rechoose(model_path: str, runs: list[str], overrides: list[str] = (), dry_run: bool = False) -> dict:
    """Choose the post-processing of ``model_path`` on the OOF predictions of ``runs`` and, unless
    ``dry_run``, write it into the file's metadata. Returns the choice (``choose_postprocessing``'s
    dict) with ``previous`` (the file's settings before) and ``chosen_on`` added."""
    meta = read_metadata(model_path)
    fold_dirs = [d for r in runs for d in discover_folds(r)]
    configs = check_runs(meta, fold_dirs, model_path)
    cfg = candidate_recipe(meta, list(overrides))
    _, explicit = config_mod.parse_overrides(list(overrides))
    data = explicit.get("data") or configs[0].get("data") or cfg["data"]
    ds = load_dataset(data, meta["input_size"][0])
    if ds.schema != ClassSchema.from_dict(meta["schema"]):
        raise DistillError(f"{data} has other classes than {model_path}: {list(ds.schema.names)}")
    names = ds.schema.names
    oofs = gather_oof({"runs": fold_dirs}, ds)
    post = choose_postprocessing(oofs, names, "runs", exclusive=exclusive_candidates(cfg["exclusive_parts"], ds))
    folds = sorted({int(f) for f in oofs.folds})
    chosen_on = {"runs": [str(d) for d in fold_dirs], "folds": folds, "images": len(oofs.stems), "data": str(data),
                 "cross_fitted": len(folds) > 1, "exclusive_candidates": cfg["exclusive_parts"],
                 "previous": {k: meta.get(k) for k in POSTPROCESSING_KEYS}, "provenance": provenance.collect()}
    console.print(describe_postprocessing(post, f"{len(fold_dirs)} fold runs ({', '.join(map(str, fold_dirs))})"),
                  markup=False)
    for key in POSTPROCESSING_KEYS:
        before, after = meta.get(key), post[key]
        same = before == after or not (before or after)  # no "exclusive" entry is the empty list
        console.print(f"{key}: {'unchanged' if same else f'{before} -> {after}'}", markup=False)
    if not dry_run:
        update_metadata(model_path, {**{k: post[k] for k in POSTPROCESSING_KEYS},
                                     "postprocessing_ablation": post["ablation"], "postprocessing_chosen_on": chosen_on})
        console.print(f"[b]rewrote {model_path}[/b]: post-processing metadata only, weights unchanged")
    else:
        console.print(f"--dry-run: {model_path} left as it was", markup=False)
    return dict(post, previous=chosen_on["previous"], chosen_on=chosen_on)


def main(argv: list[str]) -> int:
    p = ArgumentParser(prog="python distill.py --postprocess", usage=USAGE, add_help=False)
    p.add_argument("model", metavar="FILE")
    p.add_argument("runs", metavar="RUN", nargs="+")
    p.add_argument("--dry-run", action="store_true")
    if "-h" in argv or "--help" in argv:
        print(USAGE)
        return 0
    positional = [a for a in argv if "=" not in a or a.startswith("-")]
    args: argparse.Namespace = p.parse_args(positional)
    rechoose(args.model, args.runs, [a for a in argv if "=" in a and not a.startswith("-")], args.dry_run)
    return 0
