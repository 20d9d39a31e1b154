"""Error-map panels: photo | ground truth | prediction | errors, with a legend of the classes present
and of the error kinds (red missed part, blue false part, amber part confusion, magenta
orientation swap i.e. left/right or front/rear of the same part; faint green correct part).

examples:
  one panel:     python -m analysis.error_map --image X.jpg --gt X.png --pred X_pred.png --out panel.png
  every image:   python -m analysis.error_map --pred preds/ --gt DATA/masks --images DATA/images --out panels/
  training run:  python -m analysis.error_map --oof runs/unet_effnet --data DATA --out panels/

Masks hold class values; the schema comes from --schema / --data, else the ground-truth folder's
parent's classes.json, else the five-class default.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis._cli import POSITIVE, TILE, add_run_args, parser, progress
from workbench.core.cli import fail_cleanly


def parse_args(argv=None) -> argparse.Namespace:
    p = parser("python -m analysis.error_map", __doc__)
    p.add_argument("--pred", metavar="PATH", help="predicted mask file, or folder of them")
    p.add_argument("--oof", metavar="RUN", help="training run folder (instead of --pred); needs --data")
    p.add_argument("--gt", metavar="PATH", help="ground-truth mask file, or folder (default DATA/masks)")
    p.add_argument("--image", "--images", dest="image", metavar="PATH",
                   help="photo file, or folder of photos (optional; default DATA/images)")
    p.add_argument("--data", metavar="DIR", help="dataset folder with images/, masks/ and classes.json")
    p.add_argument("--schema", metavar="PATH", help="classes.json, or a folder holding one")
    add_run_args(p)
    p.add_argument("--out", required=True, metavar="PATH", help="panel .png (one image) or output folder")
    p.add_argument("--tile", metavar="PX", type=TILE, default=384, help="side of one tile")
    p.add_argument("--limit", metavar="N", type=POSITIVE, help="folder mode: only the first N images")
    args = p.parse_args(argv)
    if not args.pred and not args.oof:
        p.error("give --pred (a mask file or folder) or --oof (a training run)")
    return args


@fail_cleanly
def main(argv=None) -> int:
    args = parse_args(argv)
    from workbench.data.imageio import MASK_EXTS
    from workbench.evaluation.sources import load_image, load_mask, open_source, resolve_schema
    from workbench.exceptions import AnalysisError
    from workbench.reports import panels as V

    single = args.pred and (Path(args.pred).is_file() or Path(args.pred).suffix.lower() in MASK_EXTS)
    if single:
        if not args.gt:
            raise AnalysisError("--pred is a file: --gt must be the ground-truth mask file")
        for opt, path in (("--pred", args.pred), ("--gt", args.gt), ("--image", args.image)):
            if path and not Path(path).is_file():
                raise FileNotFoundError(f"{opt} {path}: no such file")
        schema = resolve_schema(args.schema, args.data, Path(args.gt).parent)
        gt = load_mask(args.gt, schema, strict=False)
        pred = load_mask(args.pred, schema, strict=True)
        image = load_image(args.image) if args.image else None
        panel = V.error_panel(image, gt, pred, schema, title=Path(args.pred).stem, tile=args.tile)
        out = Path(args.out)
        if out.suffix.lower() != ".png":
            out = out / f"{Path(args.pred).stem}.png"
        V.save_png(out, panel)
        print(out)
        return 0
    schema = resolve_schema(args.schema, args.data, args.gt) if args.pred else None
    source = open_source(args.pred or args.oof, gt=args.gt, images=args.image, data=args.data, schema=schema,
                         folds=args.folds, tta=not args.no_tta)
    out = Path(args.out)
    stems = source.stems[: args.limit] if args.limit else source.stems
    for stem in progress("panels")(stems):
        item = source.get(stem)
        V.save_png(out / f"{stem}.png", V.error_panel(item.image, item.gt, item.pred, source.schema, title=stem,
                                                      tile=args.tile))
    print(f"{len(stems)} panels in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
