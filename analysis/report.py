"""Where does a segmentation model fail? One HTML page (plus report.md and summary.json) with
per-class IoU, the confusion matrix, the error anatomy (missed / false / confused / orientation,
boundary vs interior), flip consistency and a gallery of the worst images as error-map panels.

examples:
  python -m analysis.report --pred preds/ --gt DATA/masks --images DATA/images --out report/
  python -m analysis.report --oof runs/unet_effnet --data ../shared/datasets/dsmlr-carparts --out report/
  python -m analysis.report --pred preds/ --data DATA --model runs/x/fold0/model.safetensors --out report/

--pred is a folder of predicted masks holding class values (same stems as the ground truth);
--oof is a training run folder: every fold*/oof.json under it is used (or --folds).
Open OUT/report.html in a browser.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis._cli import (COUNT, POSITIVE, TILE, add_data_args, add_run_args, add_strict_arg, check_coverage,
                           parser, progress)
from workbench.core.cli import fail_cleanly


def parse_args(argv=None) -> argparse.Namespace:
    p = parser("python -m analysis.report", __doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pred", metavar="DIR", help="folder of predicted masks (class values)")
    src.add_argument("--oof", metavar="RUN", help="training run folder (runs/<name>) or one fold folder")
    add_data_args(p)
    add_run_args(p)
    p.add_argument("--out", metavar="DIR", default="report", help="output folder")
    p.add_argument("--worst", metavar="K", type=COUNT, default=12, help="images in the worst-images gallery")
    p.add_argument("--all-panels", action="store_true", help="also write an error-map panel for every image "
                   "(OUT/panels/all/)")
    p.add_argument("--tile", metavar="PX", type=TILE, default=384, help="side of one panel tile")
    p.add_argument("--boundary", metavar="PX", type=COUNT, default=3, help="width of the boundary band around "
                   "ground-truth edges")
    p.add_argument("--limit", metavar="N", type=POSITIVE, help="only the first N images (a quick look)")
    add_strict_arg(p)
    p.add_argument("--name", help="name shown in the report (default: the folder's name)")
    g = p.add_argument_group("flip consistency of a model file (for --pred, which has no mirror predictions)")
    g.add_argument("--model", metavar="FILE", help="model file (.safetensors) to run on each image and its mirror")
    g.add_argument("--flip-images", metavar="N", type=POSITIVE, default=40, help="at most N images for --model")
    g.add_argument("--device", default=None, help="torch device for --model (default: cuda if available)")
    return p.parse_args(argv)


@fail_cleanly
def main(argv=None) -> int:
    args = parse_args(argv)
    from workbench.evaluation.evaluate import evaluate
    from workbench.evaluation.sources import open_source, resolve_schema
    from workbench.reports.console import print_summary
    from workbench.reports.report import write_report

    schema = resolve_schema(args.schema, args.data, args.gt) if args.pred else None
    source = open_source(args.pred or args.oof, gt=args.gt, images=args.images, data=args.data, schema=schema,
                         folds=args.folds, tta=not args.no_tta, name=args.name)
    stems = source.stems[: args.limit] if args.limit else source.stems
    ev = evaluate(source, stems, boundary_px=args.boundary, progress=progress("scoring"))
    check_coverage([ev], args.strict)
    if args.model:
        measure_flip(ev, source, stems, args)
    write_report(ev, source, args.out, worst_k=args.worst, tile=args.tile, all_panels=args.all_panels,
                 progress=progress("panels"))
    print_summary(ev, out_dir=args.out)
    return 0


def measure_flip(ev, source, stems, args) -> None:
    """Flip consistency of ``--model`` on the photos of (up to ``--flip-images``) scored images."""
    import torch

    from workbench.evaluation import error_kinds as E
    from workbench.evaluation.flip_consistency import model_flip_counts
    from workbench.exceptions import AnalysisError
    from workbench.models.modelfile import load_model

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, meta = load_model(args.model, device)
    if tuple(c["name"] for c in meta["schema"]["classes"]) != ev.schema.names:
        raise AnalysisError(f"{args.model}: its classes differ from the predictions' schema")
    picked = [s for s in stems if source.image(s) is not None][: args.flip_images] if hasattr(source, "image") else []
    if not picked:
        raise AnalysisError("--model needs the photos: pass --images (or --data)")
    images = (source.image(s) for s in progress("flip consistency")(picked))
    ev.flip = model_flip_counts(model, meta, images, device, background=E.background_index(ev.schema),
                                orientation=E.orientation_table(ev.schema))
    ev.flip_source = f"{Path(args.model).name} run on {len(picked)} images and their mirrors"


if __name__ == "__main__":
    sys.exit(main())
