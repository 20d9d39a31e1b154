"""TTA and cleanup ablation on a run's out-of-fold predictions: does a model file's post-processing
(flip TTA, exclusive part groups, per-class small-component cleanup, as stored in its metadata) pay
on held-out images?

examples:
  python -m analysis.postprocessing runs/unet_effnet_ds_e32 --data ../shared/datasets/dsmlr-carparts \\
      --model weights/student.safetensors
  python -m analysis.postprocessing runs/unet_effnet_ds_e32 --data DATA --model weights/student.safetensors \\
      --folds 1 2 --json docs/results/postprocessing.json

Per fold and over the folds pooled: mIoU without TTA, with flip TTA, with flip TTA and the model
file's post-processing (its exclusive part groups, then its cleanup thresholds), with flip TTA and
the post-processing the same rule (distill.py's: the file's exclusive groups kept where they pay,
then cleanup thresholds) would choose on these very images (optimistic: chosen and scored on the
same images), and, with two folds or more, with flip TTA and the post-processing that rule chooses
on the *other* folds ("cross-fitted": an honest estimate of the rule itself). When the
file's thresholds were chosen on other folds, "file's post-processing" is an honest held-out
estimate too; the gap to "chosen here" is the selection optimism.
The gains over flip TTA come with 95 % intervals (paired bootstrap over the images). Scored at the
masks' resolution, as everywhere else. The file's column and the cross-fitted one use the TTA setting
of the file and of the rule's choice (flip TTA on, unless it did not pay). In the JSON, ``*_cleanup*``
keys (``tta_file_cleanup``, ``tta_cleanup_cross_fitted``, ...) name the whole post-processing: TTA
setting, exclusive groups and cleanup; the names are kept so that older result files compare.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from analysis._cli import COUNT, parser
from workbench.core.cli import fail_cleanly


def ablation(fold_runs: list[Path], data: str, thresholds: dict[str, float], exclusive: list[list[str]] = (),
             file_tta: bool = True) -> dict:
    """{"folds": {name: row}, "pooled": row}; a row holds mIoU values (fractions) and, pooled, the
    bootstrap of the file's post-processing (its flip TTA setting ``file_tta``, exclusive groups, then
    cleanup) against flip TTA alone. The cross-fitted column likewise uses the TTA setting the rule
    chose on the other folds."""
    import numpy as np

    from workbench.data import load_dataset
    from workbench.distillation.ensemble import gather_oof, mix_confusions
    from workbench.distillation.postprocessing import choose_postprocessing
    from workbench.evaluation.bootstrap import paired_bootstrap
    from workbench.evaluation.metrics import mean_iou
    from workbench.exceptions import AnalysisError
    from workbench.inference.postprocess import postprocess
    from workbench.training.oof import load_oof

    size = load_oof(fold_runs[0]).image_size
    ds = load_dataset(data, size)
    names = list(ds.schema.names)
    unknown = sorted((set(thresholds) | {n for g in exclusive for n in g}) - set(names))
    if unknown:
        raise AnalysisError(f"the model file's post-processing names classes {unknown} that {data} does not have")

    groups = [[names.index(n) for n in g] for g in exclusive]

    def rule(runs: list[Path]) -> dict:
        """What distill.py's rule chooses on ``runs``: cleanup thresholds, and which of the file's
        exclusive groups to keep."""
        return choose_postprocessing(gather_oof({"run": runs}, ds), ds.schema.names, "run", exclusive=groups)

    def post_of(min_area: dict[str, float], kept: list[list[str]]):
        index = {names.index(k): float(v) for k, v in min_area.items()}
        kept_idx = [[names.index(n) for n in g] for g in kept]
        return (lambda p: postprocess(p, kept_idx, index)) if index or kept_idx else None

    def score(runs: list[Path], cms: dict[str, np.ndarray]) -> dict:
        """mIoU of each setting from its per-image confusions, and the post-processing chosen on ``runs`` themselves."""
        chosen = rule(runs)
        return {"images": len(cms["tta"]), **{k: mean_iou(v.sum(0)) for k, v in cms.items()},
                "tta_cleanup_chosen_here": chosen["ablation"]["chosen_tta_plus_cleanup"]["miou"],
                "cleanup_chosen_here": chosen["cleanup"]["min_area"], "exclusive_chosen_here": chosen["exclusive"]}

    def interval(a: np.ndarray, b: np.ndarray) -> dict:
        d = paired_bootstrap(a, b)
        return {"delta": d.delta, "low": d.low, "high": d.high, "images": d.images}

    file_min_area = {names.index(k): float(v) for k, v in thresholds.items()}
    post = (lambda p: postprocess(p, groups, file_min_area)) if groups or file_min_area else None
    w = {"run": 1.0}
    folds, per_fold = {}, []
    for run in fold_runs:
        oofs = gather_oof({"run": [run]}, ds)
        cms = {"no_tta": mix_confusions(oofs, w, False), "tta": mix_confusions(oofs, w, True)}

        def with_post(flip: bool, post_fn) -> np.ndarray:  # a setting without post-processing is already scored
            return mix_confusions(oofs, w, flip, post=post_fn) if post_fn else cms["tta" if flip else "no_tta"]

        cms["tta_file_cleanup"] = with_post(file_tta, post)
        cross_choice = None
        if len(fold_runs) > 1:  # the rule's choice on the other folds, scored on this one
            others = [r for r in fold_runs if r != run]
            cross_choice = rule(others)
            cross_post = post_of(cross_choice["cleanup"]["min_area"], cross_choice["exclusive"])
            cms["tta_cleanup_cross_fitted"] = with_post(cross_choice["tta"]["hflip"], cross_post)
        folds[run.name] = score([run], cms)
        if cross_choice is not None:
            folds[run.name]["cleanup_chosen_on_other_folds"] = cross_choice["cleanup"]["min_area"]
            folds[run.name]["exclusive_chosen_on_other_folds"] = cross_choice["exclusive"]
        per_fold.append(cms)
    pooled_cms = {k: np.concatenate([c[k] for c in per_fold]) for k in per_fold[0]}
    pooled = score(fold_runs, pooled_cms) if len(fold_runs) > 1 else dict(folds[fold_runs[0].name])
    pooled["file_cleanup_minus_tta"] = interval(pooled_cms["tta"], pooled_cms["tta_file_cleanup"])
    if "tta_cleanup_cross_fitted" in pooled_cms:
        pooled["cross_fitted_cleanup_minus_tta"] = interval(pooled_cms["tta"], pooled_cms["tta_cleanup_cross_fitted"])
    return {"folds": folds, "pooled": pooled, "file_cleanup": thresholds, "file_exclusive": list(exclusive)}


@fail_cleanly
def main(argv: list[str] | None = None) -> int:
    p = parser("python -m analysis.postprocessing", __doc__)
    p.add_argument("run", metavar="RUN", help="training run folder (its fold*/ with out-of-fold probabilities)")
    p.add_argument("--data", required=True, metavar="DIR", help="the dataset the run was trained on")
    p.add_argument("--model", required=True, metavar="FILE",
                   help="model file whose metadata holds the cleanup thresholds to test")
    p.add_argument("--folds", type=COUNT, nargs="+", metavar="K", help="only these folds (default: every fold)")
    p.add_argument("--json", metavar="FILE", help="also write the numbers here")
    args = p.parse_args(argv)

    from rich.table import Table

    from workbench.core.atomic import atomic_write
    from workbench.core.console import console
    from workbench.evaluation.sources import discover_folds
    from workbench.models.modelfile import read_metadata

    meta = read_metadata(args.model)
    cleanup = meta.get("cleanup") or {}
    thresholds = cleanup.get("min_area", {}) if cleanup.get("enabled") else {}
    exclusive = meta.get("exclusive") or []
    file_tta = bool((meta.get("tta") or {}).get("hflip", True))
    result = ablation(discover_folds(args.run, args.folds), args.data, thresholds, exclusive, file_tta)

    table = Table(title=f"{args.run}: post-processing ablation, mIoU % ({args.model}: cleanup of "
                        f"{len(thresholds)} classes" + "".join(f", one of {'/'.join(g)}" for g in exclusive) + ")")
    keys = ["no_tta", "tta", "tta_file_cleanup", "tta_cleanup_chosen_here"]
    columns = ["", "images", "no TTA", "flip TTA", "TTA + file's post-processing", "TTA + post-processing chosen here"]
    if "tta_cleanup_cross_fitted" in result["pooled"]:
        keys.append("tta_cleanup_cross_fitted")
        columns.append("TTA + post-processing chosen on the other folds")
    for col in columns:
        table.add_column(col, justify="left" if not col else "right")
    for name, r in [*result["folds"].items(), *([("pooled", result["pooled"])] if len(result["folds"]) > 1 else [])]:
        table.add_row(name, str(r["images"]), *(f"{r[k] * 100:.2f}" for k in keys))
    console.print(table)
    for key, what in (("file_cleanup_minus_tta", "file's post-processing"),
                      ("cross_fitted_cleanup_minus_tta", "post-processing chosen on the other folds")):
        if key in result["pooled"]:
            d = result["pooled"][key]
            console.print(f"{what} minus flip TTA: {d['delta'] * 100:+.2f} points (95 % interval "
                          f"{d['low'] * 100:+.2f} .. {d['high'] * 100:+.2f}, paired bootstrap over {d['images']} "
                          "images)", markup=False)
    if args.json:
        atomic_write(args.json, json.dumps(result, indent=1).encode())
        console.print(f"wrote {args.json}", markup=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
