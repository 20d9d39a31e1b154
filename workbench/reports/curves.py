"""Training curves, drawn from the per-epoch ``history`` of a run's ``metrics.json``:

- :func:`progress_chart`: one run's ``progress.png`` (train loss, validation mIoU with the best
  epoch marked, learning rate), redrawn by the trainer after every epoch; a resumed run's history
  holds every epoch, so it draws one continuous curve;
- :func:`overlay_chart`: the validation-mIoU curves of many runs, one panel per fold, one colour
  per family and one line style per role (teacher, baseline, twin, student);
- :func:`report_pictures`: the pictures of a run folder, copied beside an analysis report.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from ..core.atomic import atomic_write
from .charts import DPI, INK, MUTED, _figure, _style

PROGRESS, OVERLAY = "progress.png", "runs_overlay.png"
LOSS_COLOUR, MIOU_COLOUR, LR_COLOUR, BEST_COLOUR = "#4b5563", "#2563eb", "#9ca3af", "#d9463b"
FAMILY_COLOURS = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777",
                  "#4b5563", "#65a30d"]
ROLE_STYLES = {"teacher": ("-", 1.3), "baseline": (":", 1.5), "twin": ("--", 1.8), "student": ("-.", 2.2)}


def _number(v) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def series(history) -> dict[str, list[float]]:
    """``history`` (metrics.json's list of epoch records) as columns: epoch, train_loss, val_miou, lr;
    records that are not objects with a numeric epoch are skipped, missing values are NaN."""
    rows = [h for h in history if isinstance(h, dict) and math.isfinite(_number(h.get("epoch")))] \
        if isinstance(history, list) else []
    rows.sort(key=lambda h: h["epoch"])
    return {k: [_number(h.get(k)) for h in rows] for k in ("epoch", "train_loss", "val_miou", "lr")}


def _save(fig, path: str | Path) -> Path:
    """PNG written atomically, so a picture opened while a run rewrites it is never half a file."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, facecolor="white",
                                                      bbox_inches="tight", pad_inches=0.15))


def _pct_points(values: list[float]) -> list[float]:
    return [100 * v for v in values]


def progress_chart(path: str | Path, metrics: dict) -> Path:
    """``progress.png`` of one run: train loss (left axis) and validation mIoU (right axis) per
    epoch with the best epoch marked, the learning rate in a small panel below."""
    s = series(metrics.get("history"))
    epochs = s["epoch"]
    fig = _figure(6.4, 4.2)
    ax, ax_lr = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1], "hspace": 0.08})
    ax.plot(epochs, s["train_loss"], color=LOSS_COLOUR, marker="o", markersize=3, linewidth=1.4, label="train loss")
    ax.set_ylabel("train loss", color=LOSS_COLOUR)
    _style(ax, "both")
    handles = [ax.lines[0]]
    if any(math.isfinite(v) for v in s["val_miou"]):
        ax_v = ax.twinx()
        handles += ax_v.plot(epochs, _pct_points(s["val_miou"]), color=MIOU_COLOUR, marker="o", markersize=3,
                             linewidth=1.6, label="validation mIoU")
        best = metrics.get("best_epoch")
        if best in epochs and math.isfinite(s["val_miou"][epochs.index(best)]):
            v = 100 * s["val_miou"][epochs.index(best)]
            handles += ax_v.plot([best], [v], linestyle="none", marker="*", markersize=13, color=BEST_COLOUR,
                                 label=f"best: {v:.1f} at epoch {best}")
            ax.axvline(best, color=BEST_COLOUR, linewidth=0.8, linestyle="--")
            ax_lr.axvline(best, color=BEST_COLOUR, linewidth=0.8, linestyle="--")
        ax_v.set_ylabel("validation mIoU (%)", color=MIOU_COLOUR)
        ax_v.tick_params(colors=INK, labelsize=9)
        for side in ("top", "left", "bottom"):
            ax_v.spines[side].set_visible(False)
        ax_v.spines["right"].set_color("#c7cbd3")
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=3, fontsize=8.5, frameon=False)
    ax_lr.plot(epochs, s["lr"], color=LR_COLOUR, marker="o", markersize=2, linewidth=1.2)
    ax_lr.set_ylabel("lr", color=MUTED)
    ax_lr.yaxis.set_major_locator(MaxNLocator(3))
    ax_lr.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.1e}" if v else "0"))
    ax_lr.set_xlabel("epoch", color=MUTED)
    _style(ax_lr, "both")
    planned = metrics.get("epochs_planned")
    if isinstance(planned, int) and planned >= 1:
        ax_lr.set_xlim(0.5, max(planned, max(epochs, default=1)) + 0.5)
    ax_lr.xaxis.get_major_locator().set_params(integer=True)
    fold = metrics.get("fold")
    where = "all images" if fold == -1 else f"fold {fold}" if fold is not None else ""
    done = f"epoch {len(epochs)}/{planned}" if planned else f"{len(epochs)} epochs"
    state = "finished" if metrics.get("finished") else "in progress or interrupted"
    ax.set_title(" · ".join(str(x) for x in (metrics.get("name", "run"), where, done, state) if x),
                 loc="left", fontsize=11, color=INK, fontweight="bold", pad=24)
    return _save(fig, path)


def overlay_chart(path: str | Path, runs: list[dict], title: str = "Validation mIoU per epoch") -> Path | None:
    """Validation-mIoU curves of ``runs`` (dicts with label, family, role, fold, history, finished):
    one panel per fold, a colour per family, a line style per role; each curve's best epoch is a star,
    an unfinished run's last epoch is ringed. None when no run has a curve."""
    by_fold: dict = {}
    for r in runs:
        s = series(r.get("history"))
        if any(math.isfinite(v) for v in s["val_miou"]):
            by_fold.setdefault(r.get("fold"), []).append((r, s))
    if not by_fold:
        return None
    families = sorted({r.get("family") or "" for group in by_fold.values() for r, _ in group})
    colour = {f: FAMILY_COLOURS[i % len(FAMILY_COLOURS)] for i, f in enumerate(families)}
    folds = sorted(by_fold, key=lambda f: (not isinstance(f, int), f if isinstance(f, int) else str(f)))
    ncols = min(3, len(folds))
    nrows = math.ceil(len(folds) / ncols)
    fig = _figure(4.6 * ncols + 2.2, 3.4 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    for ax, fold in zip(axes.flat, folds):
        for r, s in by_fold[fold]:
            style, width = ROLE_STYLES.get(r.get("role"), ROLE_STYLES["teacher"])
            c = colour[r.get("family") or ""]
            pts = [(e, 100 * v) for e, v in zip(s["epoch"], s["val_miou"]) if math.isfinite(v)]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle=style, linewidth=width, color=c)
            best = max(pts, key=lambda p: p[1])
            ax.plot(*best, marker="*", markersize=9, color=c, markeredgecolor=INK, markeredgewidth=0.4)
            if not r.get("finished"):
                ax.plot(*pts[-1], marker="o", markersize=11, color=c, markerfacecolor="none", markeredgewidth=1.4)
        ax.set_title(f"fold {fold}" if isinstance(fold, int) and fold >= 0 else str(fold), loc="left", fontsize=10,
                     color=INK)
        ax.set_xlabel("epoch", color=MUTED)
        ax.xaxis.get_major_locator().set_params(integer=True)
        _style(ax, "both")
    for ax in axes.flat[len(folds):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("validation mIoU (%)", color=MUTED)
    roles = [ro for ro in ROLE_STYLES if any(r.get("role") == ro for g in by_fold.values() for r, _ in g)]
    handles = ([Line2D([], [], color=colour[f], linewidth=2.5, label=f or "(no family)") for f in families]
               + [Line2D([], [], color=INK, linestyle=ROLE_STYLES[ro][0], linewidth=ROLE_STYLES[ro][1], label=ro)
                  for ro in roles]
               + [Line2D([], [], color=INK, marker="*", linestyle="none", label="best epoch"),
                  Line2D([], [], color=INK, marker="o", markerfacecolor="none", linestyle="none",
                         label="unfinished: last epoch")])
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=8.5, frameon=False,
               handlelength=3.2)
    fig.suptitle(title, x=0.01, ha="left", fontsize=12, color=INK, fontweight="bold")
    fig.set_layout_engine("constrained")
    return _save(fig, path)


def report_pictures(run_dir: str | Path, fold_dirs, out_dir: str | Path) -> list[tuple[str, str]]:
    """Copy the ``progress.png`` of each fold folder and the nearest ``runs_overlay.png`` (in the run
    folder or up to two folders above it, where ``python -m analysis.runs`` writes it by default)
    into ``out_dir/img``; returns (caption, path relative to ``out_dir``) for each."""
    out, found = Path(out_dir), []
    for d in fold_dirs:
        d = Path(d)
        if (d / PROGRESS).is_file():
            found.append((f"{d.parent.name}/{d.name}: training curves", d / PROGRESS, f"img/progress_{d.name}.png"))
    for d in [Path(run_dir), *list(Path(run_dir).resolve().parents)[:2]]:
        if (d / OVERLAY).is_file():
            found.append((f"all runs under {d}: validation mIoU per epoch", d / OVERLAY, f"img/{OVERLAY}"))
            break
    pictures = []
    for caption, src, rel in found:
        try:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out / rel)
        except OSError:
            continue  # a picture that cannot be copied is left out of the report
        pictures.append((caption, rel))
    return pictures
