"""Summary of a training campaign: every finished run under runs/, its epochs, wall time, best
validation mIoU and OOF mIoU (plain / flip TTA), plus the totals, as a Markdown table.

    python -m analysis.campaign_summary [--runs runs]
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from workbench.core.cli import ArgumentParser, fail_cleanly  # noqa: E402


def collect(runs: Path) -> list[dict]:
    rows = []
    for metrics in sorted(runs.glob("*/*/metrics.json")):
        m = json.loads(metrics.read_text())
        seconds = sum(h.get("seconds", 0) for h in m.get("history", []))
        rows.append({"run": f"{metrics.parent.parent.name}/{metrics.parent.name}", "epochs": m.get("epochs_done"),
                     "seconds": seconds, "val_miou": m.get("val_miou"), "oof": m.get("oof") or {}})
    return rows


def markdown(rows: list[dict]) -> str:
    pct = lambda v: f"{v * 100:.2f}" if isinstance(v, (int, float)) else "-"  # noqa: E731
    lines = ["| run | epochs | train+val time | best val mIoU | OOF mIoU | OOF mIoU, flip TTA |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['epochs']} | {r['seconds'] / 60:.1f} min | {pct(r['val_miou'])} | "
                     f"{pct(r['oof'].get('miou'))} | {pct(r['oof'].get('miou_tta'))} |")
    total = sum(r["seconds"] for r in rows)
    lines.append(f"| **total** | {sum(r['epochs'] or 0 for r in rows)} | **{total / 3600:.2f} h** | | | |")
    return "\n".join(lines)


@fail_cleanly
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m analysis.campaign_summary", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=Path("runs"), help="campaign folder (default: runs)")
    args = p.parse_args(argv)
    rows = collect(args.runs)
    if not rows:
        print(f"no finished runs under {args.runs}")
        return 1
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
