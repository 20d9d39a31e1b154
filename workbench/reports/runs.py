"""Every training run under a folder in one table, and their validation curves in one picture.

A run folder is any folder (at any depth: ``runs/<name>/fold<k>/``, ``runs/<name>/full/``) holding a
``metrics.json``, or a ``config.yaml`` with a checkpoint (a run that has not finished an epoch yet).
:func:`collect_runs` reads each one into a :class:`Run` and never raises: a missing, empty or
half-written ``metrics.json`` makes a *broken* row with the reason; fields that older code did not
write show as "-". :func:`write_runs_report` writes ``runs.md``, ``runs.csv`` and the overlay picture
(:func:`workbench.reports.curves.overlay_chart`); :func:`runs_table` is the rich table.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from ..core.atomic import atomic_write
from .curves import OVERLAY, overlay_chart, series

MARKDOWN, CSV = "runs.md", "runs.csv"
ROLES = ("teacher", "baseline", "twin", "student")
STATUS_STYLE = {"finished": "green", "interrupted": "yellow", "broken": "red"}
COLUMNS = ["run", "recipe", "family", "role", "fold", "epochs", "best mIoU", "best ep", "last mIoU", "min",
           "img/s", "MB", "status", "note"]  # mIoU: validation, %; min: training minutes; MB: model.safetensors
TEXT_COLUMNS = {"run", "recipe", "family", "role", "status", "note"}


@dataclass
class Run:
    """One run folder as a table row (None: not recorded)."""

    path: str
    name: str
    status: str = "broken"
    note: str = ""
    recipe: str | None = None
    family: str | None = None
    role: str | None = None
    fold: int | None = None
    epochs_done: int | None = None
    epochs_planned: int | None = None
    best_miou: float | None = None
    best_epoch: int | None = None
    last_miou: float | None = None
    minutes: float | None = None
    images_per_s: float | None = None
    model_mb: float | None = None
    history: list = field(default_factory=list, repr=False)

    @property
    def finished(self) -> bool:
        return self.status == "finished"


def infer_role(name: str, recorded=None) -> str:
    """teacher / baseline / twin / student: ``recorded`` when it is one of them, else from the name
    (distill.py names the hard-label twin ``<student>_twin``; the H2O baseline is ``h2o_seed``)."""
    if recorded in ROLES:
        return recorded
    name = name.lower()
    if name.endswith("_twin") or name == "twin":
        return "twin"
    if name.startswith("student"):
        return "student"
    if name.startswith("h2o") or "baseline" in name:
        return "baseline"
    return "teacher"


def _fold_from_folder(folder: Path) -> int | None:
    m = re.fullmatch(r"fold(\d+)", folder.name)
    return int(m.group(1)) if m else -1 if folder.name == "full" else None


def _int(v) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _finite(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _read_metrics(folder: Path) -> tuple[dict | None, str]:
    """(metrics, "") or (None, why it cannot be used)."""
    path = folder / "metrics.json"
    if not path.exists():
        return None, "no metrics.json yet (no epoch finished)"
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        return None, f"metrics.json unreadable: {err}"
    if not text.strip():
        return None, "metrics.json is empty"
    try:
        metrics = json.loads(text)
    except ValueError as err:
        return None, f"metrics.json is not valid JSON ({err})"
    if not isinstance(metrics, dict):
        return None, f"metrics.json holds a {type(metrics).__name__}, not an object"
    return metrics, ""


def read_run(folder: Path, root: Path) -> Run:
    """The row of one run folder; never raises."""
    rel = folder.relative_to(root).as_posix() if folder != root else folder.name
    name = folder.parent.name if _fold_from_folder(folder) is not None else folder.name
    run = Run(path=rel or ".", name=name, fold=_fold_from_folder(folder), role=infer_role(name))
    model = folder / "model.safetensors"
    if model.is_file():
        run.model_mb = round(model.stat().st_size / 2**20, 1)
    metrics, why = _read_metrics(folder)
    if metrics is None:
        run.note = why
        run.status = "interrupted" if why.startswith("no metrics.json") else "broken"
        return run
    run.name = str(metrics.get("name") or name)
    run.recipe = metrics.get("recipe") or None
    run.family = metrics.get("family") or run.name
    run.role = infer_role(run.name, metrics.get("role"))
    run.fold = _int(metrics.get("fold")) if _int(metrics.get("fold")) is not None else run.fold
    run.history = metrics.get("history") if isinstance(metrics.get("history"), list) else []
    s = series(run.history)
    run.epochs_done = _int(metrics.get("epochs_done"))
    if run.epochs_done is None:
        run.epochs_done = len(s["epoch"])
    run.epochs_planned = _int(metrics.get("epochs_planned"))
    vals = [(int(e), v) for e, v in zip(s["epoch"], s["val_miou"]) if math.isfinite(v)]
    run.best_epoch = _int(metrics.get("best_epoch"))
    best = dict(vals).get(run.best_epoch) if vals else None
    if best is None and vals:
        run.best_epoch, best = max(vals, key=lambda p: p[1])
    run.best_miou = best if best is not None else _finite(metrics.get("val_miou"))
    run.last_miou = vals[-1][1] if vals else None
    run.minutes = _finite(metrics.get("train_minutes"))
    seconds = [v for h in run.history if isinstance(h, dict) and (v := _finite(h.get("seconds"))) is not None]
    if run.minutes is None and seconds:
        run.minutes = round(sum(seconds) / 60, 2)
    speeds = [v for h in run.history if isinstance(h, dict) and (v := _finite(h.get("images_per_s"))) is not None]
    run.images_per_s = round(sum(speeds) / len(speeds), 2) if speeds else None
    notes = []
    if metrics.get("finished") is True:
        run.status = "finished"
        if run.epochs_planned and run.epochs_done is not None and run.epochs_done < run.epochs_planned:
            notes.append(f"stopped early after {run.epochs_done} epochs")
        if run.model_mb is None:
            notes.append("no model.safetensors")
    else:
        run.status = "interrupted"
        notes.append(f"stopped after epoch {run.epochs_done} (or still running)")
    if run.history and len(s["epoch"]) < len(run.history):
        notes.append(f"{len(run.history) - len(s['epoch'])} malformed history records skipped")
    run.note = "; ".join(notes)
    return run


def find_run_folders(root: Path) -> list[Path]:
    """Folders under ``root`` (itself included) that hold a run: a metrics.json, or a config.yaml
    beside a checkpoint."""
    found = {p.parent for p in root.rglob("metrics.json")}
    found |= {p.parent for p in root.rglob("config.yaml") if (p.parent / "last.pt").exists()}
    return sorted(f for f in found if not any(part.startswith(".") for part in f.relative_to(root).parts))


def _order(run: Run):
    return (ROLES.index(run.role) if run.role in ROLES else len(ROLES), run.family or run.name, run.name,
            run.fold if run.fold is not None and run.fold >= 0 else 10**6, run.path)


def collect_runs(root: str | Path) -> list[Run]:
    """Every run under ``root``, teachers first, then baselines, twins and students, each by family,
    name and fold."""
    root = Path(root)
    return sorted((read_run(f, root) for f in find_run_folders(root)), key=_order)


# ------------------------------------------------------------------------------------- formats

def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _val(v) -> str:
    return "-" if v is None or v == "" else str(v)


def cells(run: Run) -> list[str]:
    """The row's cells, in :data:`COLUMNS` order, as printed ("-": not recorded)."""
    fold = None if run.fold is None else "full" if run.fold < 0 else run.fold
    epochs = "-" if run.epochs_done is None else f"{run.epochs_done}/{_val(run.epochs_planned)}"
    return [run.path, _val(run.recipe), _val(run.family), _val(run.role), _val(fold), epochs, _pct(run.best_miou),
            _val(run.best_epoch), _pct(run.last_miou), _val(None if run.minutes is None else f"{run.minutes:.1f}"),
            _val(None if run.images_per_s is None else f"{run.images_per_s:.2f}"), _val(run.model_mb), run.status,
            run.note]


def markdown_table(runs: list[Run]) -> str:
    rule = ["---" if c in TEXT_COLUMNS else "---:" for c in COLUMNS]
    rows = [COLUMNS, rule] + [[c.replace("|", "\\|") for c in cells(r)] for r in runs]
    return ("".join("| " + " | ".join(row) + " |\n" for row in rows)
            + "\nmIoU: validation mIoU (%) on the run's held-out fold; min: training minutes; img/s: training "
              "images per second; MB: model.safetensors; -: not recorded.\n")


def csv_text(runs: list[Run]) -> str:
    """The table as CSV: the same columns, mIoU in percent, empty where not recorded."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows([["" if c == "-" else c for c in cells(r)] for r in runs])
    return buf.getvalue()


def runs_table(runs: list[Run], title: str = "") -> Table:
    table = Table(title=title or None, title_justify="left")
    for col in COLUMNS:
        table.add_column(col, justify="left" if col in TEXT_COLUMNS else "right", overflow="fold")
    for r in runs:
        row = cells(r)
        row[COLUMNS.index("status")] = f"[{STATUS_STYLE.get(r.status, 'white')}]{r.status}[/]"
        table.add_row(*row[:-1], f"[dim]{row[-1]}[/]")
    return table


def write_runs_report(runs: list[Run], out_dir: str | Path, title: str = "") -> dict[str, Path]:
    """``runs.md``, ``runs.csv`` and (when any run has a validation curve) ``runs_overlay.png`` in
    ``out_dir``; returns the paths written."""
    out = Path(out_dir)
    paths = {"markdown": atomic_write(out / MARKDOWN, markdown_table(runs)),
             "csv": atomic_write(out / CSV, csv_text(runs))}
    overlay = overlay_chart(out / OVERLAY, [{"family": r.family or r.name, "role": r.role, "fold": r.fold,
                                             "history": r.history, "finished": r.finished} for r in runs
                                            if r.status != "broken"],
                            title=title or "Validation mIoU per epoch")
    if overlay is not None:
        paths["overlay"] = overlay
    return paths
