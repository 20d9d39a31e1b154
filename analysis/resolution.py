"""How does a model's score depend on the size of the photo? A run's held-out photos are shrunk so
that their longer side is each of --sizes pixels, predicted through inference's own path (each
fold's model.safetensors, its flip TTA and cleanup) and scored at that size against their masks
shrunk the same way: what a labelled test photo of that size would score.

examples:
  python -m analysis.resolution runs/unet_effnet_ds_e64 --data ../shared/datasets/dsmlr-carparts --folds 0
  python -m analysis.resolution runs/unet_effnet_ds_e64 --data DATA --folds 0 --sizes 512 256 \\
      --out docs/results/resolution_unet_effnet_ds_e64_fold0

The DSMLR training photos are all 512 px squares while the test photos are 229-1600 px wide, so
the out-of-fold score is the score of 512-px photos only. Every size is compared with the largest
one (mIoU difference and its 95 % interval, paired bootstrap over the images), and a per-class
table shows which parts suffer. --out writes resolution.json and one OOF table per size
(oof_table_<size>px.npz, for analysis.bootstrap's per-class intervals).
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

from analysis._cli import COUNT, POSITIVE, parser, progress
from workbench.core.cli import fail_cleanly


@fail_cleanly
def main(argv: list[str] | None = None) -> int:
    p = parser("python -m analysis.resolution", __doc__)
    p.add_argument("run", metavar="RUN", help="training run folder (fold*/ with oof.json and model.safetensors)")
    p.add_argument("--data", required=True, metavar="DIR", help="the dataset the run was trained on")
    p.add_argument("--folds", type=COUNT, nargs="+", metavar="K", help="only these folds (default: every finished fold)")
    p.add_argument("--sizes", type=POSITIVE, nargs="+", default=[512, 384, 256, 192], metavar="PX",
                   help="longer side of the shrunk photos, in pixels")
    p.add_argument("--device", default="cpu", help="torch device of the predictions")
    p.add_argument("--out", metavar="DIR", help="write resolution.json and the OOF tables here")
    args = p.parse_args(argv)
    sizes = sorted(set(args.sizes), reverse=True)

    from workbench.core.atomic import atomic_write
    from workbench.evaluation.bootstrap import paired_bootstrap
    from workbench.evaluation.metrics import iou_per_class, mean_iou
    from workbench.evaluation.oof_table import save_table, score_source
    from workbench.evaluation.resolution import ShrunkSource, default_predictor

    make_predictor = functools.cache(default_predictor)  # each fold's model file loaded once, not once per size
    tables = {}
    for size in sizes:
        source = ShrunkSource(args.run, args.data, size, args.folds, args.device, make_predictor)
        tables[size] = score_source(source, progress=progress(f"{size} px"))
    reference = tables[sizes[0]]
    names = reference.classes
    result = {"run": str(args.run), "folds": args.folds, "images": len(reference.stems),
              "prediction": reference.prediction, "reference_px": sizes[0], "sizes": {}}
    for size, table in tables.items():
        row = {"miou": mean_iou(table.confusion.sum(0)),
               "iou": dict(zip(names, iou_per_class(table.confusion.sum(0)).tolist()))}
        if size != sizes[0]:
            d = paired_bootstrap(reference.confusion, table.confusion)
            row["minus_reference"] = {"delta": d.delta, "low": d.low, "high": d.high, "images": d.images}
        result["sizes"][str(size)] = row
    print_tables(result, names, sizes)
    if args.out:
        out = Path(args.out)
        for size, table in tables.items():
            save_table(out / f"oof_table_{size}px.npz", table)
        atomic_write(out / "resolution.json", json.dumps(result, indent=1, allow_nan=True))
        print(f"wrote {out}/resolution.json and {len(tables)} OOF tables")
    return 0


def print_tables(result: dict, names: list[str], sizes: list[int]) -> None:
    import math

    from rich.table import Table

    from workbench.core.console import console

    rows = result["sizes"]
    summary = Table(title=f"{result['run']}: {result['images']} held-out photos shrunk to each size "
                          f"({result['prediction']}, the model files' cleanup), scored at that size",
                    title_justify="left")
    for col in ("longer side", "mIoU", f"minus {sizes[0]} px", "95 % interval"):
        summary.add_column(col, justify="right")
    for size in sizes:
        row, d = rows[str(size)], rows[str(size)].get("minus_reference")
        summary.add_row(f"{size} px", f"{row['miou'] * 100:.2f}", f"{d['delta'] * 100:+.2f}" if d else "",
                        f"{d['low'] * 100:+.2f} .. {d['high'] * 100:+.2f}" if d else "")
    console.print(summary)
    per_class = Table(title="IoU × 100 per class and size", title_justify="left")
    per_class.add_column("class")
    for size in sizes:
        per_class.add_column(f"{size} px", justify="right")
    for name in names:
        values = [rows[str(s)]["iou"][name] for s in sizes]
        if all(math.isnan(v) for v in values):
            continue
        per_class.add_row(name, *(f"{v * 100:.1f}" for v in values))
    console.print(per_class)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
