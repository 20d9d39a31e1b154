"""Write a model's per-image confusion matrices on its scored images (an "OOF table", about 22 kB per
fold) so that pooled comparisons survive the loss of runs/ (a new machine): commit it beside the run's
metrics.json and give it to analysis.bootstrap later.

examples:
  python -m analysis.oof_table runs/kd_unet_ch_w1_t1 --data ../shared/datasets/dsmlr-carparts --folds 2 \\
      --out docs/results/kd_unet_ch_w1_t1_fold2_oof_table.npz
  python -m analysis.bootstrap --a docs/results/unet_effnet_ds_fold{0,1,2}_oof_table.npz \\
      --b docs/results/kd_unet_ch_w1_t1_fold{0,1,2}_oof_table.npz

RUN is a training run folder (its out-of-fold probabilities: the table holds flip TTA and plain) or a
folder of predicted masks (with --gt or --data).
"""

from __future__ import annotations

import sys

from analysis._cli import add_data_args, add_run_args, parser, progress
from workbench.core.cli import fail_cleanly


@fail_cleanly
def main(argv: list[str] | None = None) -> int:
    p = parser("python -m analysis.oof_table", __doc__)
    p.add_argument("run", metavar="RUN", help="training run folder or predictions folder")
    p.add_argument("--out", required=True, metavar="FILE.npz", help="the table to write")
    add_data_args(p)
    add_run_args(p)
    args = p.parse_args(argv)
    if not args.out.endswith(".npz"):
        p.error("--out must name an .npz file")

    from workbench.evaluation.metrics import mean_iou
    from workbench.evaluation.oof_table import save_table, score_source
    from workbench.evaluation.sources import open_source

    source = open_source(args.run, gt=args.gt, images=None, data=args.data, folds=args.folds, tta=not args.no_tta)
    table = score_source(source, progress=progress("scoring"))
    save_table(args.out, table)
    print(f"{args.out}: {len(table.stems)} images, mIoU ({table.prediction}) "
          f"{mean_iou(table.confusion.sum(0)) * 100:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
