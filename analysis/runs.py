"""Every training run under a folder in one table, and their validation curves in one picture.

examples:
  python -m analysis.runs runs/
  python -m analysis.runs runs/ --out report/runs

Run folders are found at any depth (runs/<name>/fold<k>/, runs/<name>/full/). Each row: recipe,
family, role (teacher / baseline / twin / student), fold, epochs done/planned, best and last
validation mIoU, minutes, images/s, model size and status (finished / interrupted / broken, with
the reason). Writes OUT/runs.md, OUT/runs.csv and OUT/runs_overlay.png (validation mIoU per epoch,
one panel per fold, a colour per family, a line style per role).
"""

from __future__ import annotations

import sys
from pathlib import Path

from analysis._cli import parser
from workbench.core.cli import fail_cleanly


@fail_cleanly
def main(argv=None) -> int:
    p = parser("python -m analysis.runs", __doc__)
    p.add_argument("runs", nargs="?", default="runs", metavar="RUNS", help="folder holding the run folders")
    p.add_argument("--out", metavar="DIR", help="where to write runs.md, runs.csv and runs_overlay.png "
                   "(default: RUNS)")
    args = p.parse_args(argv)
    from rich.console import Console

    from workbench.exceptions import AnalysisError
    from workbench.reports.runs import collect_runs, runs_table, write_runs_report

    root = Path(args.runs)
    if not root.is_dir():
        raise AnalysisError(f"{root}: no such folder")
    runs = collect_runs(root)
    if not runs:
        raise AnalysisError(f"{root}: no run folders (no metrics.json, no config.yaml beside a last.pt) under it")
    console = Console()
    if not console.is_terminal:  # a pipe or a file: room for the whole table
        console = Console(width=max(console.width, 180))
    console.print(runs_table(runs, f"{len(runs)} run{'s' * (len(runs) != 1)} under {root}"))
    for path in write_runs_report(runs, args.out or root, f"Validation mIoU per epoch · {root}").values():
        console.print(f"wrote {path}", markup=False, highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
