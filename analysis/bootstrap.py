"""Is B better than A? The mIoU difference B - A on the images both predicted, with a 95 % interval
from a paired bootstrap over those images (dataset-level mIoU per sample, as everywhere else).

examples:
  python -m analysis.bootstrap --a runs/ablation_fpn_squash256 --b runs/fpn_effnet \\
      --data ../shared/datasets/dsmlr-carparts --folds 0
  python -m analysis.bootstrap --a runs/fpn_effnet --b runs/student --data DATA      # twin vs student

--a/--b are training run folders (out-of-fold probabilities, flip TTA unless --no-tta) or folders
of predicted masks (with --gt or --data). The difference is B minus A: positive means B is better.
A per-class table follows (IoU of A and B, B - A and its 95 % interval), so that a gain in mIoU
that costs some parts shows.
"""

from __future__ import annotations

import math
import sys

from analysis._cli import add_data_args, add_run_args, parser, progress
from workbench.core.cli import fail_cleanly


@fail_cleanly
def main(argv: list[str] | None = None) -> int:
    p = parser("python -m analysis.bootstrap", __doc__)
    p.add_argument("--a", required=True, metavar="DIR", help="the baseline: run folder or predictions folder")
    p.add_argument("--b", required=True, metavar="DIR", help="the candidate: run folder or predictions folder")
    p.add_argument("--samples", type=int, default=2000, help="bootstrap samples")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    add_data_args(p)
    add_run_args(p)
    args = p.parse_args(argv)
    if args.samples < 100:
        p.error("--samples must be at least 100")

    import numpy as np

    from workbench.evaluation.bootstrap import paired_bootstrap
    from workbench.evaluation.metrics import confusion_matrix
    from workbench.evaluation.sources import open_source
    from workbench.exceptions import AnalysisError

    kw = dict(gt=args.gt, images=None, data=args.data, folds=args.folds, tta=not args.no_tta)
    a, b = open_source(args.a, **kw), open_source(args.b, **kw)
    if a.schema.values != b.schema.values:
        raise AnalysisError(f"{args.a} and {args.b} use different class schemas")
    stems = sorted(set(a.stems) & set(b.stems))
    if not stems:
        raise AnalysisError(f"{args.a} and {args.b} have no image in common")
    C = a.schema.num_classes
    cms_a, cms_b = [], []
    for stem in progress("scoring")(stems):
        ia, ib = a.get(stem), b.get(stem)
        cms_a.append(confusion_matrix(ia.gt, ia.pred, C))
        cms_b.append(confusion_matrix(ib.gt, ib.pred, C))
    result = paired_bootstrap(np.stack(cms_a), np.stack(cms_b), args.samples, args.seed)
    only = len(set(a.stems) ^ set(b.stems))
    print(f"B = {args.b} minus A = {args.a}: {result}" + (f"; {only} images predicted by only one side were left out" if only else ""))
    print("B is better" if result.low > 0 else "A is better" if result.high < 0 else "no significant difference")
    print_per_class(result, a.schema.names)
    return 0


def print_per_class(result, names: list[str]) -> None:
    from rich.table import Table

    from workbench.core.console import console

    table = Table(title="per class: IoU × 100, B − A with its 95 % interval", title_justify="left")
    for col in ("class", "A", "B", "B − A", "95 % interval", ""):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, ia, ib, lo, hi in zip(names, result.iou_a, result.iou_b, result.class_low, result.class_high):
        if math.isnan(ia) and math.isnan(ib):  # absent from the ground truth and from both predictions
            continue
        verdict = "B better" if lo > 0 else "A better" if hi < 0 else ""
        table.add_row(name, f"{ia * 100:.1f}", f"{ib * 100:.1f}", f"{(ib - ia) * 100:+.1f}",
                      f"{lo * 100:+.1f} .. {hi * 100:+.1f}", verdict)
    console.print(table)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
