"""Is B better than A? The mIoU difference B - A on the images both predicted, with a 95 % interval
from a paired bootstrap over those images (dataset-level mIoU per sample, as everywhere else).

examples:
  python -m analysis.bootstrap --a runs/ablation_fpn_squash256 --b runs/fpn_effnet \\
      --data ../shared/datasets/dsmlr-carparts --folds 0
  python -m analysis.bootstrap --a runs/fpn_effnet --b runs/student --data DATA      # twin vs student

--a/--b are training run folders (out-of-fold probabilities, flip TTA unless --no-tta), folders
of predicted masks (with --gt or --data), or one or more OOF tables (.npz from analysis.oof_table,
e.g. one per fold: they are pooled), which need neither runs/ nor the dataset:
  python -m analysis.bootstrap --a docs/results/unet_effnet_ds_fold{0,1,2}_oof_table.npz \
      --b docs/results/kd_unet_ch_w1_t1_fold{0,1,2}_oof_table.npz
The difference is B minus A: positive means B is better.
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
    p.add_argument("--a", required=True, nargs="+", metavar="PATH",
                   help="the baseline: run folder, predictions folder, or OOF tables (.npz)")
    p.add_argument("--b", required=True, nargs="+", metavar="PATH",
                   help="the candidate: run folder, predictions folder, or OOF tables (.npz)")
    p.add_argument("--samples", type=int, default=2000, help="bootstrap samples")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    add_data_args(p)
    add_run_args(p)
    args = p.parse_args(argv)
    if args.samples < 100:
        p.error("--samples must be at least 100")

    import numpy as np

    from workbench.evaluation.bootstrap import paired_bootstrap
    from workbench.exceptions import AnalysisError

    (names_a, values_a, stems_a, cms_a), (_, values_b, stems_b, cms_b) = (side(p, args) for p in (args.a, args.b))
    if values_a != values_b:
        raise AnalysisError(f"{' '.join(args.a)} and {' '.join(args.b)} use different class schemas")
    stems = sorted(set(stems_a) & set(stems_b))
    if not stems:
        raise AnalysisError(f"{' '.join(args.a)} and {' '.join(args.b)} have no image in common")
    result = paired_bootstrap(cms_a(stems), cms_b(stems), args.samples, args.seed)  # only the common images scored
    only = len(set(stems_a) ^ set(stems_b))
    print(f"B = {' '.join(args.b)} minus A = {' '.join(args.a)}: {result}"
          + (f"; {only} images predicted by only one side were left out" if only else ""))
    print("B is better" if result.low > 0 else "A is better" if result.high < 0 else "no significant difference")
    print_per_class(result, names_a)
    return 0


def side(paths: list[str], args):
    """(class names, class values, image stems, confusions(stems) -> (N, C, C) per-image confusion
    matrices) of one side: OOF tables (pooled), or one run or predictions folder, scored against the
    ground truth when asked."""
    import numpy as np

    from workbench.evaluation.oof_table import pool_tables, score_source
    from workbench.evaluation.sources import open_source
    from workbench.exceptions import AnalysisError

    tables = [p for p in paths if p.endswith(".npz")]
    if tables:
        if len(tables) < len(paths):
            raise AnalysisError(f"{' '.join(paths)}: give OOF tables (.npz) or one folder per side, not both")
        names, values, by_stem = pool_tables(tables, tta=not args.no_tta)
        return names, values, list(by_stem), lambda stems: np.stack([by_stem[s] for s in stems])
    if len(paths) > 1:
        raise AnalysisError(f"{' '.join(paths)}: one run or predictions folder per side (several OOF tables pool)")
    source = open_source(paths[0], gt=args.gt, images=None, data=args.data, folds=args.folds, tta=not args.no_tta)
    return (list(source.schema.names), list(source.schema.values), list(source.stems),
            lambda stems: score_source(source, stems, progress(f"scoring {paths[0]}")).confusion)


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
