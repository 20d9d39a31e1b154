"""Do mutually exclusive parts pay as a post-processing rule? Measured on runs' out-of-fold predictions.

examples:
  python -m analysis.exclusive_parts runs/unet_effnet_ds_e64_s1 runs/unet_effnet_ds_e32 \\
      --data ../shared/datasets/dsmlr-carparts --group tailgate trunk
  python -m analysis.exclusive_parts runs/unet_effnet_ds_e64 --data DATA --group tailgate trunk \\
      --folds 1 --json docs/results/exclusive_parts.json

A group names parts of which one photo shows at most one: a car has a trunk or a tailgate, never
both. The rule (``workbench.inference.postprocess.merge_exclusive``): where a prediction labels
pixels with two members of the group, the group's probabilities go to the member with the most
pixels. First the dataset's masks are checked (how many hold two members: the rule assumes none);
then, per run (its folds pooled), flip-TTA mIoU without and with the rule, the difference with a
95 % paired-bootstrap interval, on how many images the rule fired and on how many of those the
member it kept is the one the ground truth shows, the members' IoU before and after, and where
the members are confused with each other (pixels at the OOF resolution): in split photos, which
the rule can mend, or in photos predicted with one member only (a whole part called another),
which no rule within a photo can. Scored at
the masks' resolution, as everywhere else. Runs scored on the same images are not independent
evidence.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from analysis._cli import COUNT, parser
from workbench.core.cli import fail_cleanly


def measure(run_folds: list[Path], ds, group: list[int]) -> dict:
    """The rule on one run's OOF predictions (folds pooled): mIoU without/with, bootstrap, firings;
    IoU of the group's members keyed by name."""
    import numpy as np

    from workbench.distillation.ensemble import gather_oof, mix, mix_confusions
    from workbench.evaluation.bootstrap import paired_bootstrap
    from workbench.evaluation.metrics import iou_per_class, mean_iou
    from workbench.inference.postprocess import merge_exclusive

    oofs = gather_oof({"run": run_folds}, ds)
    w = {"run": 1.0}
    fired = kept_right = 0
    confused = {"split": 0, "one_member": 0}  # pixels of one member predicted as another, by kind of photo
    for i in range(len(oofs.stems)):
        p = mix(oofs, w, True, i)
        labels, mask = p.argmax(0), oofs.small_masks[i]
        merged = merge_exclusive(p, [group])
        wrong = int(np.count_nonzero(np.isin(mask, group) & np.isin(labels, group) & (mask != labels)))
        confused["split" if merged is not p else "one_member"] += wrong
        if merged is not p:
            fired += 1
            kept = int(merged.argmax(0)[np.isin(labels, group)][0])
            kept_right += bool(np.any(mask == kept))
    before = mix_confusions(oofs, w, True)
    after = mix_confusions(oofs, w, True, post=lambda p: merge_exclusive(p, [group]))
    d = paired_bootstrap(before, after)
    iou_b, iou_a = iou_per_class(before.sum(0)), iou_per_class(after.sum(0))
    return {"images": len(oofs.stems), "tta": mean_iou(before.sum(0)), "tta_merged": mean_iou(after.sum(0)),
            "delta": d.delta, "low": d.low, "high": d.high, "fired": fired, "kept_right": kept_right,
            "confused_pixels_lowres": confused,
            "iou_before": {ds.schema.names[c]: float(iou_b[c]) for c in group},
            "iou_after": {ds.schema.names[c]: float(iou_a[c]) for c in group}}


@fail_cleanly
def main(argv: list[str] | None = None) -> int:
    p = parser("python -m analysis.exclusive_parts", __doc__)
    p.add_argument("runs", nargs="+", metavar="RUN", help="training run folders (fold*/ with out-of-fold probabilities)")
    p.add_argument("--data", required=True, metavar="DIR", help="the dataset the runs were trained on")
    p.add_argument("--group", required=True, nargs="+", metavar="PART",
                   help="names of parts that never share a photo (two or more)")
    p.add_argument("--folds", type=COUNT, nargs="+", metavar="K", help="only these folds (default: every fold)")
    p.add_argument("--json", metavar="FILE", help="also write the numbers here")
    args = p.parse_args(argv)
    if len(set(args.group)) < 2:
        p.error("--group needs two or more different parts")

    from rich.table import Table

    from workbench.core.atomic import atomic_write
    from workbench.core.console import console
    from workbench.data import load_dataset
    from workbench.distillation.postprocessing import masks_holding_two
    from workbench.evaluation.sources import discover_folds
    from workbench.exceptions import AnalysisError
    from workbench.training.oof import load_oof

    fold_runs = {run: discover_folds(run, args.folds) for run in args.runs}
    ds = load_dataset(args.data, load_oof(next(iter(fold_runs.values()))[0]).image_size)
    names = list(ds.schema.names)
    unknown = [n for n in args.group if n not in names]
    if unknown:
        raise AnalysisError(f"{args.data} has no part named {', '.join(unknown)} (its parts: {', '.join(names[1:])})")
    group = [names.index(n) for n in args.group]
    shared = masks_holding_two(ds, group)
    console.print(f"{args.data}: {len(shared)} of {len(ds.stems)} masks hold two or more of "
                  f"{', '.join(args.group)}" + (f" ({', '.join(shared[:10])})" if shared else ""), markup=False)

    results = {}
    table = Table(title=f"flip-TTA OOF mIoU %, and with one of {', '.join(args.group)} per photo; the parts' IoU "
                        "before→after")
    for col in ("run", "images", "mIoU", "with rule", "Δ (95 % interval)", "fired", "kept right", *args.group,
                "confused: split / one part"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for run, runs in fold_runs.items():
        r = measure(runs, ds, group)
        results[run] = r
        table.add_row(Path(run).name, str(r["images"]), f"{r['tta'] * 100:.2f}", f"{r['tta_merged'] * 100:.2f}",
                      f"{r['delta'] * 100:+.2f} ({r['low'] * 100:+.2f}..{r['high'] * 100:+.2f})",
                      str(r["fired"]), str(r["kept_right"]),
                      *(f"{r['iou_before'][n] * 100:.1f}→{r['iou_after'][n] * 100:.1f}" for n in args.group),
                      f"{r['confused_pixels_lowres']['split']} / {r['confused_pixels_lowres']['one_member']}")
    console.print(table)
    if args.json:
        out = {"group": args.group, "masks_with_two_or_more": shared, "runs": results}
        atomic_write(args.json, json.dumps(out, indent=1).encode())
        console.print(f"wrote {args.json}", markup=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
