"""What a run records about itself: ``metrics.json`` (rewritten atomically after every epoch, so an
interrupted run's history is readable without its checkpoint, and at the end), the ``progress.png``
curves drawn from it, and the console lines and per-class IoU table it prints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from rich.table import Table
from rich.text import Text

from ..core.atomic import atomic_write
from ..core.console import console


def run_metrics(cfg: dict, state: dict, n_params: int, schema, finished: bool) -> dict:
    """What ``metrics.json`` holds; written after every epoch (``finished`` false) and at the end."""
    metrics = {"name": cfg["name"], "family": cfg["family"], "recipe": cfg.get("recipe", ""), "fold": cfg["fold"],
               "arch": cfg["arch"], "encoder": cfg["encoder"], "image_size": cfg["image_size"],
               "crop_size": cfg["crop_size"], "epochs_planned": cfg["epochs"], "best_epoch": state["best_epoch"],
               "epochs_done": state["epoch"], "history": state["history"], "parameters": n_params,
               "train_minutes": round(sum(h["seconds"] for h in state["history"]) / 60, 2), "finished": finished}
    best = [h for h in state["history"] if h["epoch"] == state["best_epoch"]]
    if best and "val_miou" in best[0]:
        metrics.update(val_miou=best[0]["val_miou"], val_iou=dict(zip(schema.names, best[0]["val_iou"])))
    return metrics


def write_metrics(out: Path, metrics: dict) -> None:
    atomic_write(out / "metrics.json", json.dumps(metrics, indent=1))


_drawing_failed = False  # warn about the first progress.png that cannot be drawn, not every epoch


def draw_progress(out: Path, metrics: dict) -> None:
    """Redraw ``<out>/progress.png`` from ``metrics`` (:mod:`workbench.reports.curves`); a failure
    prints one warning per process and never stops the run."""
    global _drawing_failed
    try:
        from ..reports.curves import PROGRESS, progress_chart

        progress_chart(out / PROGRESS, metrics)
    except Exception as err:  # noqa: BLE001 - a picture is never worth a training run
        if not _drawing_failed:
            _drawing_failed = True
            console.print(f"warning: could not draw {out / 'progress.png'} ({type(err).__name__}: {err}); training "
                          "goes on, later drawing errors are not shown", style="yellow", markup=False)


def epoch_line(record: dict, state: dict, epochs: int) -> str:
    """One console line per epoch: loss, validation mIoU (best so far), learning rate, seconds."""
    line = f"epoch {record['epoch']:>3}/{epochs}  loss {record['train_loss']:.4f}"
    if "val_miou" in record:
        line += f"  val mIoU {record['val_miou'] * 100:5.1f}  (best {state['best_miou'] * 100:.1f} @ {state['best_epoch']})"
    return line + f"  lr {record['lr']:.2e}  {record['seconds']:.0f}s"


def per_class_table(names, columns: dict[str, np.ndarray], title: str) -> Table:
    table = Table(title=Text(title))
    table.add_column("class")
    for col in columns:
        table.add_column(col, justify="right")
    for i, n in enumerate(names):
        table.add_row(Text(n), *[f"{v[i] * 100:.1f}" if np.isfinite(v[i]) else "-" for v in columns.values()])
    table.add_row("[b]mIoU[/b]", *[f"[b]{np.nanmean(v) * 100:.1f}[/b]" for v in columns.values()])
    return table


def validation_table(state: dict, names, fold: int) -> Table:
    """Per-class validation IoU of the best epoch (and of the last one, if it is another)."""
    best = state["history"][state["best_epoch"] - 1]
    columns = {f"best (ep {state['best_epoch']})": np.array(best["val_iou"], dtype=float)}
    if state["best_epoch"] != state["epoch"]:
        columns[f"last (ep {state['epoch']})"] = np.array(state["history"][-1]["val_iou"], dtype=float)
    return per_class_table(names, columns, f"validation IoU (%), fold {fold}")
