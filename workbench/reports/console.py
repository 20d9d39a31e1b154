"""Console summaries of a report and of a comparison (rich tables with class colours). Class, file
and run names are the user's text, passed to rich as :class:`~rich.text.Text`, never as markup (a
class may be called ``hood[/]``)."""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console
from rich.style import Style
from rich.table import Table
from rich.text import Text

from ..evaluation import error_kinds as E
from ..evaluation.evaluate import Evaluation
from . import panels as V
from .format import hex_colour, num, pct, signed
from .hints import hint_text, hints


def _iou_style(v: float) -> str:
    if not math.isfinite(v):
        return "dim"
    return "green" if v >= 0.75 else "yellow" if v >= 0.5 else "red"


def print_summary(ev: Evaluation, console=None, out_dir: str | Path | None = None) -> None:
    console = console or Console()
    palette = V.class_palette(ev.schema)
    t = Table(title=Text(f"{ev.name}: per-class IoU"), title_justify="left", show_edge=False, pad_edge=False)
    t.add_column("class")
    t.add_column("IoU", justify="right")
    t.add_column("", no_wrap=True)
    for i, n in enumerate(ev.schema.names):
        v = ev.iou[i]
        bar = "█" * int(round(20 * v)) if math.isfinite(v) else ""
        colour = hex_colour(palette[i])
        t.add_row(Text.assemble(("■", colour), " ", n), Text(num(v), style=_iou_style(v)), Text(bar, style=colour))
    console.print(t)
    flip = (f"{pct(ev.flip.score, 2)} (parts {pct(ev.flip.part_score, 2)})" if ev.flip else "n/a")
    tk = ev.kind_totals()
    wrong = max(tk[1:].sum(), 1)
    kinds = ", ".join(f"{E.ERROR_NAMES[k]} {pct(tk[k] / wrong, 0)}" for k in E.ERROR_KINDS)
    console.print(f"[bold]mIoU {num(ev.miou)}[/]  ·  mean image mIoU {num(ev.mean_image_miou)}  ·  "
                  f"pixel acc {pct(ev.pixel_acc, 2)}  ·  flip consistency {flip}")
    console.print(f"wrong pixels: {kinds}; {pct(ev.regions.boundary_error_share, 0)} within "
                  f"{ev.boundary_px} px of an edge")
    worst = ", ".join(f"{r.stem} ({num(r.miou, 2)})" for r in ev.worst(5))
    console.print(f"worst images: {worst}", markup=False)
    for h in hints(ev)[:4]:
        console.print("  → " + hint_text(h), style="dim", highlight=False, markup=False)
    if out_dir is not None:
        page = Path(out_dir) / "report.html"
        console.print(Text.assemble("report: ", (str(page), Style(link=page.resolve().as_uri()))))


def print_comparison(ev_a: Evaluation, ev_b: Evaluation, names: tuple[str, str], console=None,
                     out_dir: str | Path | None = None) -> None:
    console = console or Console()
    na, nb = names
    t = Table(title=Text(f"A = {na} vs B = {nb}: per-class IoU"), title_justify="left", show_edge=False,
              pad_edge=False)
    for col, j in (("class", "left"), (na, "right"), (nb, "right"), ("Δ (B − A)", "right")):
        t.add_column(Text(col), justify=j)
    rows = list(enumerate(ev_a.schema.names)) + [(-1, "mean")]
    for i, n in rows:
        a, b = (ev_a.miou, ev_b.miou) if i < 0 else (ev_a.iou[i], ev_b.iou[i])
        d = b - a
        style = "green" if math.isfinite(d) and d > 5e-4 else "red" if math.isfinite(d) and d < -5e-4 else "dim"
        t.add_row(Text(n, style="bold" if i < 0 else ""), num(a), num(b), Text(signed(d), style=style))
    console.print(t)
    console.print(f"Δ = B − A ({nb} minus {na}): positive where B is better", markup=False, highlight=False)
    if out_dir is not None:
        console.print(f"report: {Path(out_dir) / 'report.html'}", markup=False)
