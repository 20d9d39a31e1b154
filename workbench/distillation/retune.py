"""Choose an existing model file's post-processing again, on the out-of-fold predictions of runs of
its recipe, and rewrite only that part of its metadata (``python distill.py --postprocess``).

``distill.py`` chooses flip TTA, exclusive part groups and cleanup thresholds once, on the OOF
predictions it has when it exports (the student's ``--cv`` folds, or the best family's). When more
folds of the same recipe finish later, the choice can be made again on more held-out images, and
cross-fitted, without retraining the model: the file keeps its weights byte for byte, and its
metadata records what the new choice was made on, its ablation, and the entries it replaced.

The runs must be finished folds of the file's model (architecture, encoder, decoder, input size,
schema): post-processing chosen on another model's errors is a proxy, which
``analysis.postprocessing`` can measure but this tool does not write into a model file. Other
training differences (seed, epochs, fold) are printed. The file may not be a training run's own
model file or a published teacher: their hashes identify them (done markers, OOF and soft-label
caches), so copy such a file first.
"""

from __future__ import annotations

from pathlib import Path

from ..core import config as config_mod
from ..core import provenance
from ..core.cli import ArgumentParser
from ..core.console import console
from ..data import load_dataset
from ..evaluation.sources import discover_folds
from ..exceptions import ConfigError, DistillError, UsageError
from ..models.modelfile import network_differences, read_metadata, update_metadata
from ..training.done import DONE, MODEL_FILE, not_done_reason
from ..training.oof import load_oof
from .ensemble import gather_oof
from .postprocessing import choose_postprocessing, describe_postprocessing, exclusive_candidates
from .student import training_differences
from .teachers import PUBLISHED_DIR, dataset_digest

POSTPROCESSING_KEYS = ("tta", "exclusive", "cleanup")
RECORD_KEYS = POSTPROCESSING_KEYS + ("postprocessing_ablation", "postprocessing_chosen_on")
OVERRIDES = ("recipe", "data", "exclusive_parts")
USAGE = """python distill.py --postprocess FILE RUN [RUN ...] [--dry-run] [recipe=NAME] [data=DIR]
                         [exclusive_parts=[[a,b]]]

Choose FILE's post-processing (flip TTA, exclusive part groups, cleanup thresholds) again on the
out-of-fold predictions of RUN (a run folder: all its finished folds; or one fold folder), cross-fitted
when they span two folds or more, and rewrite FILE's metadata with it (weights unchanged).

  python distill.py --postprocess weights/student.safetensors runs/unet_effnet_ds_e64
  python distill.py --postprocess weights/student.safetensors runs/unet_effnet_ds_e64/fold0 \\
      runs/unet_effnet_ds_e64/fold1 --dry-run

Candidate exclusive groups: exclusive_parts= if given, else those of recipe= if given, else those
FILE was made with (its stored recipe, or the recipe it names), always with FILE's current groups.
The dataset is the one the runs were trained on (data= overrides it)."""


def check_target(path: Path) -> None:
    """Refuse to rewrite a file that other files identify by its hash."""
    if path.name == MODEL_FILE and (path.parent / DONE).is_file():
        raise DistillError(f"{path} is the model file of a finished training run, which its {DONE} records by hash "
                           "(teachers and twins are found by it): copy it first, and rewrite the copy")
    if PUBLISHED_DIR.resolve() in path.resolve().parents:
        raise DistillError(f"{path} is a published teacher, whose OOF and soft-label caches are keyed on its hash: "
                           "copy it first, and rewrite the copy")


def finished_folds(runs: list[str]) -> list[Path]:
    """The finished fold folders of ``runs`` (run or fold folders), each once; unfinished ones are named and skipped."""
    out, seen = [], set()
    for run in runs:
        for fold_dir in discover_folds(run):
            if fold_dir.resolve() in seen:
                continue
            seen.add(fold_dir.resolve())
            why = not_done_reason(fold_dir)
            if why:
                console.print(f"{fold_dir}: skipped, {why}", markup=False)
            else:
                out.append(fold_dir)
    if not out:
        raise DistillError(f"no finished fold in {', '.join(runs)}: wait until one has finished training")
    return out


def check_runs(meta: dict, fold_dirs: list[Path], model_path: Path) -> list[dict]:
    """The fold runs' model-file metadata, after checking that each is of the file's model and that
    no two hold the same held-out images; their other training differences are printed."""
    metas, seen = [], {}
    for d in fold_dirs:
        theirs = read_metadata(d / MODEL_FILE)
        differ = network_differences(meta, theirs)
        if differ:
            raise DistillError(f"{d} is another model than {model_path} ({', '.join(differ)} differ: "
                               f"{theirs['arch']}/{theirs['encoder']} at {theirs['input_size'][0]} px, the file "
                               f"{meta['arch']}/{meta['encoder']} at {meta['input_size'][0]} px): choose post-processing "
                               "on runs of the file's own recipe (analysis.postprocessing measures a proxy without writing it)")
        trained = set(training_differences(theirs.get("recipe") or {}, meta.get("recipe") or {})) - {"fold"}
        if trained:
            console.print(f"{d}: trained otherwise than {model_path} in {sorted(trained)}", markup=False)
        stems = load_oof(d).stems
        shared = seen.keys() & set(stems)
        if shared:
            raise DistillError(f"{d} and {seen[next(iter(shared))]} both hold out {len(shared)} images "
                               f"({sorted(shared)[:3]}): give one run per fold")
        seen.update(dict.fromkeys(stems, d))
        metas.append(theirs)
    return metas


def _groups(value, where: str) -> list[list[str]]:
    try:
        return config_mod.field_of("exclusive_parts").convert(value)
    except ValueError as err:
        raise DistillError(f"exclusive_parts in {where}: {err}") from None


def candidate_groups(meta: dict, overrides: dict, recipe: str | None) -> tuple[list[list[str]], str]:
    """The exclusive groups to try and where they came from (see USAGE), FILE's own groups added."""
    stored = meta.get("recipe") if isinstance(meta.get("recipe"), dict) else {}
    if "exclusive_parts" in overrides:
        groups, source = _groups(overrides["exclusive_parts"], "the command line"), "the command line"
    elif recipe:
        groups, source = config_mod.load_recipe(recipe)["exclusive_parts"], f"recipe {recipe}"
    elif "exclusive_parts" in stored:
        groups, source = _groups(stored["exclusive_parts"], "the file's recipe"), "the recipe stored in the file"
    elif stored.get("recipe"):
        try:
            groups, source = config_mod.load_recipe(str(stored["recipe"]))["exclusive_parts"], f"recipe {stored['recipe']}"
        except ConfigError:
            groups, source = [], f"none (the file's recipe {stored['recipe']!r} is not in recipes/)"
    else:
        groups, source = [], "none (the file names no recipe)"
    own = [g for g in _groups(meta.get("exclusive") or [], "the file's exclusive entry") if g not in groups]
    return groups + own, source + (" and the file's own groups" if own else "")


def rechoose(model_path: str | Path, runs: list[str], overrides: list[str] = (), dry_run: bool = False) -> dict:
    """Choose the post-processing of ``model_path`` on the OOF predictions of ``runs`` and, unless
    ``dry_run``, write it into the file's metadata. Returns the choice (``choose_postprocessing``'s
    dict) with ``chosen_on`` added (what it was chosen on, and the entries it replaced)."""
    model_path = Path(model_path)
    meta = read_metadata(model_path)
    if not dry_run:
        check_target(model_path)
    recipe, values = config_mod.parse_overrides(list(overrides))
    fold_dirs = finished_folds(runs)
    fold_metas = check_runs(meta, fold_dirs, model_path)
    datasets = {str((m.get("recipe") or {}).get("data", "")) for m in fold_metas}
    if "data" not in values and len(datasets) != 1:
        raise DistillError(f"the runs were trained on different datasets {sorted(datasets)}: name one with data=DIR")
    data = str(values.get("data") or datasets.pop())
    groups, source = candidate_groups(meta, values, recipe)
    ds = load_dataset(data, meta["input_size"][0])
    trained_on = (meta.get("training_data") or {}).get("sha1")
    if trained_on and trained_on != dataset_digest(ds):
        console.print(f"note: {model_path} was trained on other data than {data} (training-data hash differs)",
                      markup=False)
    console.print(f"exclusive part groups tried: {groups or 'none'}, from {source}", markup=False)
    oofs = gather_oof({"runs": fold_dirs}, ds)
    post = choose_postprocessing(oofs, ds.schema.names, "runs", exclusive=exclusive_candidates(groups, ds))
    folds = sorted({int(f) for f in oofs.folds})
    chosen_on = {"runs": [str(d) for d in fold_dirs], "folds": folds, "images": len(oofs.stems), "data": data,
                 "cross_fitted": len(folds) > 1, "exclusive_candidates": groups, "exclusive_candidates_from": source,
                 "previous": {k: meta[k] for k in RECORD_KEYS if k in meta}, "provenance": provenance.collect()}
    console.print(describe_postprocessing(post, f"{len(fold_dirs)} fold runs ({', '.join(map(str, fold_dirs))})"),
                  markup=False)
    for key in POSTPROCESSING_KEYS:
        before, after = meta.get(key), post[key]
        same = before == after or not (before or after)  # no "exclusive" entry is the empty list
        console.print(f"{key}: {'unchanged' if same else f'{before} -> {after}'}", markup=False)
    if dry_run:
        console.print(f"--dry-run: {model_path} left as it was", markup=False)
    else:
        update_metadata(model_path, {**{k: post[k] for k in POSTPROCESSING_KEYS},
                                     "postprocessing_ablation": post["ablation"], "postprocessing_chosen_on": chosen_on})
        console.print(f"rewrote {model_path}: post-processing metadata only, weights unchanged", markup=False)
    return dict(post, chosen_on=chosen_on)


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print(USAGE)
        return 0
    overrides = [a for a in argv if a.partition("=")[0] in OVERRIDES]
    unknown = [a for a in argv if "=" in a and a not in overrides and not Path(a).exists()]
    if unknown:
        raise UsageError(f"--postprocess takes {', '.join(k + '=' for k in OVERRIDES)} only, not {unknown}")
    p = ArgumentParser(prog="python distill.py --postprocess", usage=USAGE, add_help=False)
    p.add_argument("model", metavar="FILE")
    p.add_argument("runs", metavar="RUN", nargs="+")
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args([a for a in argv if a not in overrides])
    rechoose(args.model, args.runs, overrides, args.dry_run)
    return 0
