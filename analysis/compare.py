"""Two sets of predictions of the same images side by side (TTA on/off, cleanup on/off, teacher vs
student, ...): per-class IoU with deltas Δ = B − A (positive: B is better), both confusion matrices
and their change, the error anatomy of each, and the images that got most worse and most better as
A/B panels with a map of the pixels B fixed and broke. Each side's full single report goes into a sub-folder.

examples:
  python -m analysis.compare --a preds_tta/ --b preds_plain/ --gt DATA/masks --images DATA/images \\
      --out report_cmp/ --names "TTA on" "TTA off"
  python -m analysis.compare --a runs/teacher --b runs/student --data ../shared/datasets/dsmlr-carparts \\
      --out report_cmp/ --names teacher student

--a/--b are folders of predicted masks (class values) or training run folders (out-of-fold
probabilities; needs --data). Only images present in both are compared.
"""

from __future__ import annotations

import argparse
import sys

from analysis._cli import (COUNT, POSITIVE, TILE, add_data_args, add_run_args, add_strict_arg, check_coverage,
                           parser, progress)
from workbench.core.cli import fail_cleanly


def parse_args(argv=None) -> argparse.Namespace:
    p = parser("python -m analysis.compare", __doc__)
    p.add_argument("--a", required=True, metavar="DIR", help="first predictions folder or run folder (the baseline A; Δ = B − A)")
    p.add_argument("--b", required=True, metavar="DIR", help="second predictions folder or run folder")
    p.add_argument("--names", nargs=2, metavar=("A", "B"), help="labels of the two (default: folder names)")
    add_data_args(p)
    add_run_args(p)
    p.add_argument("--out", metavar="DIR", default="report_cmp", help="output folder")
    p.add_argument("-k", "--changed", metavar="K", type=COUNT, default=6,
                   help="panels of the K most regressed and K most improved images")
    p.add_argument("--worst", metavar="K", type=COUNT, default=8, help="worst-images gallery size of the sub-reports")
    p.add_argument("--no-sub-reports", action="store_true", help="skip the two single reports in sub-folders")
    p.add_argument("--tile", metavar="PX", type=TILE, default=320, help="side of one comparison-panel tile")
    p.add_argument("--boundary", metavar="PX", type=COUNT, default=3, help="width of the boundary band")
    p.add_argument("--limit", metavar="N", type=POSITIVE, help="only the first N common images")
    add_strict_arg(p)
    return p.parse_args(argv)


@fail_cleanly
def main(argv=None) -> int:
    args = parse_args(argv)
    from pathlib import Path

    from workbench.evaluation.evaluate import evaluate
    from workbench.evaluation.sources import open_source, resolve_schema
    from workbench.exceptions import AnalysisError
    from workbench.reports.comparison import write_comparison
    from workbench.reports.console import print_comparison

    names = tuple(args.names) if args.names else (Path(args.a).name or "A", Path(args.b).name or "B")
    if names[0] == names[1]:
        names = (f"{names[0]} (A)", f"{names[1]} (B)")
    schema = resolve_schema(args.schema, args.data, args.gt)
    kw = dict(gt=args.gt, images=args.images, data=args.data, schema=schema, folds=args.folds, tta=not args.no_tta)
    src_a = open_source(args.a, name=names[0], **kw)
    src_b = open_source(args.b, name=names[1], **kw)
    if src_a.schema.names != src_b.schema.names:
        raise AnalysisError(f"{args.a} and {args.b} use different class schemas")
    common = sorted(set(src_a.stems) & set(src_b.stems))
    if not common:
        raise AnalysisError(f"{args.a} and {args.b} have no image in common")
    if args.limit:
        common = common[: args.limit]
    ev_a = evaluate(src_a, common, boundary_px=args.boundary, progress=progress(f"scoring {names[0]}"))
    ev_b = evaluate(src_b, common, boundary_px=args.boundary, progress=progress(f"scoring {names[1]}"))
    check_coverage([ev_a, ev_b], args.strict)
    write_comparison(ev_a, ev_b, src_a, src_b, args.out, names, k=args.changed, tile=args.tile,
                     sub_reports=not args.no_sub_reports, worst_k=args.worst, progress=progress("panels"))
    print_comparison(ev_a, ev_b, names, out_dir=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
