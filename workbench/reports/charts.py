"""Charts of the analysis reports (matplotlib, drawn off-screen to PNG files).

Uses matplotlib's object API with the Agg canvas directly, so importing this module never touches
pyplot's global state or needs a display. Every text is drawn as it is written: math text and TeX are
off (class and run names are the user's, and ``$\\frac$`` must not reach the math parser).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap, PowerNorm, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from ..evaluation import error_kinds as E

DPI = 120
INK = "#22252b"
MUTED = "#6b7280"
GRID = "#e5e7eb"
COLOUR_A = "#7c8799"
COLOUR_B = "#f08c2e"
GOOD, BAD = "#2f9e5b", "#d9463b"
BENEFIT_CMAP = LinearSegmentedColormap.from_list("benefit", [BAD, "#fbe3e0", "#ffffff", "#dcf1e3", GOOD])


def _figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _style(ax, grid_axis: str = "x") -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#c7cbd3")
    ax.tick_params(colors=INK, labelsize=9)
    ax.grid(axis=grid_axis, color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for text in fig.findobj(Text):  # titles, labels, tick labels, legends, annotations: literal text
        text.set_parse_math(False)
        text.set_usetex(False)
    fig.savefig(path, dpi=DPI, facecolor="white", bbox_inches="tight", pad_inches=0.15)
    return path


def _hex(rgb) -> str:
    return "#%02x%02x%02x" % tuple(int(v) for v in rgb)


def _nan0(v: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(v), v, 0.0)


def iou_bars(path: str | Path, names, iou: np.ndarray, colours: np.ndarray, title: str = "Per-class IoU") -> Path:
    """Horizontal bars, worst class on top, each bar in its class colour; dashed line at the mean."""
    iou = np.asarray(iou, dtype=float)
    order = sorted(range(len(names)), key=lambda i: (math.isfinite(iou[i]), iou[i] if math.isfinite(iou[i]) else 0),
                   reverse=True)
    fig = _figure(6.4, 0.3 * len(names) + 1.2)
    ax = fig.add_subplot()
    y = np.arange(len(order))
    vals = _nan0(iou[order])
    ax.barh(y, vals, color=[_hex(colours[i]) for i in order], edgecolor="#3b3f46", linewidth=0.6, height=0.72)
    for yi, i in zip(y, order):
        txt = "n/a" if not math.isfinite(iou[i]) else f"{iou[i]:.3f}"
        ax.text(_nan0(iou[i:i + 1])[0] + 0.01, yi, txt, va="center", fontsize=8.5, color=INK)
    m = np.nanmean(iou) if np.isfinite(iou).any() else float("nan")
    if math.isfinite(m):
        ax.axvline(m, color=INK, linestyle="--", linewidth=1)
        ax.text(m, len(order) - 0.3, f" mean {m:.3f}", fontsize=8.5, color=INK, va="bottom")
    ax.set_yticks(y, [names[i] for i in order], fontsize=9)
    ax.set_xlim(0, 1.08)
    ax.set_ylim(-0.6, len(order) - 0.1)
    ax.set_xlabel("IoU", color=MUTED)
    ax.set_title(title, loc="left", fontsize=12, color=INK, fontweight="bold")
    _style(ax)
    return _save(fig, path)


def iou_compare_bars(path: str | Path, names, iou_a: np.ndarray, iou_b: np.ndarray,
                     labels: tuple[str, str]) -> Path:
    """Per-class IoU of A and B as paired bars (class order) with the B - A delta beside."""
    iou_a, iou_b = np.asarray(iou_a, float), np.asarray(iou_b, float)
    n = len(names)
    fig = _figure(10.5, 0.36 * n + 1.3)
    ax, ad = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 1.25], "wspace": 0.06})
    y = np.arange(n)[::-1]
    ax.barh(y + 0.19, _nan0(iou_a), height=0.38, color=COLOUR_A, label=labels[0])
    ax.barh(y - 0.19, _nan0(iou_b), height=0.38, color=COLOUR_B, label=labels[1])
    ax.set_yticks(y, list(names), fontsize=9)
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("IoU", color=MUTED)
    ax.legend(loc="lower right", fontsize=9, frameon=False, ncols=2, bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Per-class IoU", loc="left", fontsize=12, color=INK, fontweight="bold")
    _style(ax)
    delta = iou_b - iou_a
    d0 = _nan0(delta)
    ad.barh(y, d0, color=[GOOD if d > 0 else BAD for d in d0], height=0.6)
    ad.axvline(0, color=INK, linewidth=0.8)
    lim = max(0.02, float(np.abs(d0).max()) * 1.45)
    ad.set_xlim(-lim, lim)
    for yi, d in zip(y, delta):
        if math.isfinite(d):
            ad.text(d + (lim * 0.03 if d >= 0 else -lim * 0.03), yi, f"{d:+.3f}", va="center",
                    ha="left" if d >= 0 else "right", fontsize=8, color=INK)
    ad.set_xlabel(f"Δ IoU ({labels[1]} − {labels[0]})", color=MUTED)
    _style(ad)
    ad.tick_params(left=False)
    return _save(fig, path)


def _row_normalise(cm: np.ndarray) -> np.ndarray:
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(1, keepdims=True)
    return np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)


def confusion_image(path: str | Path, cm: np.ndarray, names, title: str = "Confusion matrix",
                    orientation_pairs=()) -> Path:
    """Row-normalised confusion matrix (rows: ground truth, columns: prediction), percentages in the
    cells, orientation pairs (left/right, front/rear) framed in magenta."""
    norm = _row_normalise(cm)
    n = len(names)
    side = max(5.0, 0.42 * n + 2.2)
    fig = _figure(side + 0.8, side)
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", norm=PowerNorm(0.45, vmin=0, vmax=1), interpolation="nearest")
    for i in range(n):
        for j in range(n):
            v = norm[i, j]
            if v >= 0.005:
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7 if n > 12 else 8.5,
                        color="white" if v > 0.35 else INK, fontweight="bold" if i == j else "normal")
    magenta = _hex(E.ERROR_COLOURS[E.ORIENTATION])
    for a, b in orientation_pairs:
        for i, j in ((a, b), (b, a)):
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=magenta, linewidth=1.6))
    return _finish_matrix(fig, ax, im, names, title + "  (% of each ground-truth row)", path)


def confusion_delta_image(path: str | Path, cm_a: np.ndarray, cm_b: np.ndarray, names,
                          labels: tuple[str, str]) -> Path:
    """Change of the row-normalised confusion matrix from A to B, coloured by benefit: green where
    B is better (more on the diagonal, less off it), red where worse. Cells show the change in
    percentage points."""
    delta = _row_normalise(cm_b) - _row_normalise(cm_a)
    benefit = -delta
    np.fill_diagonal(benefit, np.diag(delta))
    n = len(names)
    side = max(5.0, 0.42 * n + 2.2)
    fig = _figure(side + 0.8, side)
    ax = fig.add_subplot()
    lim = max(0.01, float(np.abs(benefit).max()))
    im = ax.imshow(benefit, cmap=BENEFIT_CMAP, norm=TwoSlopeNorm(0, -lim, lim), interpolation="nearest")
    for i in range(n):
        for j in range(n):
            v = delta[i, j]
            if abs(v) >= 0.005:
                ax.text(j, i, f"{100 * v:+.0f}", ha="center", va="center", fontsize=7 if n > 12 else 8.5, color=INK)
    return _finish_matrix(fig, ax, im, names, f"Confusion change {labels[0]} → {labels[1]} (pp; green = better)", path)


def _finish_matrix(fig, ax, im, names, title: str, path: str | Path) -> Path:
    """Class-name ticks, axis labels, title and colour bar of a class x class matrix; saves it."""
    n = len(names)
    ax.set_xticks(range(n), names, rotation=55, ha="right", rotation_mode="anchor", fontsize=8.5)
    ax.set_yticks(range(n), names, fontsize=8.5)
    ax.set_xlabel("predicted", color=MUTED)
    ax.set_ylabel("ground truth", color=MUTED)
    ax.set_title(title, loc="left", fontsize=11, color=INK, fontweight="bold")
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    cb = fig.colorbar(im, ax=ax, fraction=0.035, pad=0.02)
    cb.ax.tick_params(labelsize=8)
    cb.outline.set_visible(False)
    return _save(fig, path)


def error_split_chart(path: str | Path, rows: list[tuple[str, np.ndarray]], title: str) -> Path:
    """Stacked horizontal bars: error rate of each region (share of its pixels), split by error kind.
    ``rows`` = (label, counts per kind: CORRECT, MISSED, FALSE_PART, CONFUSION, ORIENTATION)."""
    fig = _figure(6.4, 0.5 * len(rows) + 1.9)
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    for yi, (label, counts) in zip(y, rows):
        counts = np.asarray(counts, dtype=float)
        n = max(counts.sum(), 1.0)
        left = 0.0
        for k in E.ERROR_KINDS:
            w = 100 * counts[k] / n
            ax.barh(yi, w, left=left, color=_hex(E.ERROR_COLOURS[k]), height=0.62,
                    label=E.ERROR_NAMES[k] if yi == y[0] else None)
            left += w
        ax.text(left, yi, f"  {left:.1f}%", va="center", fontsize=9, color=INK)
    ax.set_yticks(y, [r[0] for r in rows], fontsize=9)
    xmax = max(100 * np.asarray(r[1], float)[1:].sum() / max(np.asarray(r[1], float).sum(), 1) for r in rows)
    ax.set_xlim(0, max(xmax * 1.25, 1))
    ax.set_xlabel("% of the region's pixels that are wrong", color=MUTED)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncols=2, fontsize=8.5, frameon=False)
    ax.set_title(title, loc="left", fontsize=12, color=INK, fontweight="bold", pad=40)
    _style(ax)
    return _save(fig, path)


def miou_histogram(path: str | Path, values, worst_cut: float | None = None) -> Path:
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    fig = _figure(6.4, 2.9)
    ax = fig.add_subplot()
    ax.hist(v, bins=np.linspace(0, 1, 41), color=COLOUR_A, edgecolor="white", linewidth=0.6)
    if worst_cut is not None and math.isfinite(worst_cut):
        ax.axvline(worst_cut, color=BAD, linestyle="--", linewidth=1.2)
        ax.text(worst_cut, ax.get_ylim()[1] * 0.95, " gallery cut-off", color=BAD, fontsize=8.5, va="top")
    ax.set_xlim(0, 1)
    ax.set_xlabel("per-image mIoU", color=MUTED)
    ax.set_ylabel("images", color=MUTED)
    ax.set_title("Per-image mIoU", loc="left", fontsize=12, color=INK, fontweight="bold")
    _style(ax, "y")
    return _save(fig, path)


def miou_scatter(path: str | Path, a, b, labels: tuple[str, str]) -> Path:
    """Per-image mIoU of B against A; points above the diagonal are images B does better."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    fig = _figure(4.8, 4.6)
    ax = fig.add_subplot()
    better = b > a
    ax.plot([0, 1], [0, 1], color="#9ca3af", linewidth=1, linestyle="--")
    ax.scatter(a[better], b[better], s=14, color=GOOD, alpha=0.75, label=f"{labels[1]} better ({better.sum()})")
    ax.scatter(a[~better], b[~better], s=14, color=BAD, alpha=0.75, label=f"{labels[1]} not better ({(~better).sum()})")
    lo = min(float(a.min(initial=1)), float(b.min(initial=1)), 0.9) - 0.05
    ax.set_xlim(max(lo, 0), 1)
    ax.set_ylim(max(lo, 0), 1)
    ax.set_xlabel(f"{labels[0]}: per-image mIoU", color=MUTED)
    ax.set_ylabel(f"{labels[1]}: per-image mIoU", color=MUTED)
    ax.legend(fontsize=8.5, frameon=False, loc="upper left", bbox_to_anchor=(0, -0.13), ncols=2)
    ax.set_title("Per-image mIoU", loc="left", fontsize=12, color=INK, fontweight="bold")
    _style(ax, "both")
    return _save(fig, path)
