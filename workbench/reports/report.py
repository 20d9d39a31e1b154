"""One evaluation as a report folder::

    report.html  report.md  summary.json
    img/         charts (per-class IoU, confusion matrix, error split, per-image mIoU) and, for a
                 training run, each fold's progress.png and the runs overlay (copied)
    panels/      error-map panels of the worst images (``--all-panels``: panels/all/ for every image)

:func:`write_report` draws the charts (:mod:`.charts`) and panels (:mod:`.panels`), then writes each
format (:mod:`.html`, :mod:`.markdown`, :mod:`.summary`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from ..core.atomic import atomic_write, remove_stale_temporaries
from ..evaluation.evaluate import Evaluation
from . import charts, html, markdown, summary
from .curves import report_pictures
from . import panels as V
from .format import safe_name
from .hints import hints


def render_panels(source, stems: list[str], out_dir: Path, prefix: str, tile: int, evaluation: Evaluation,
                  progress: Callable[[Iterable], Iterable] | None = None) -> dict[str, str]:
    """Error-map panel per stem -> {stem: path relative to out_dir}."""
    links = {}
    seq = list(enumerate(stems, 1))
    for rank, stem in (progress(seq) if progress else seq):
        item = source.get(stem)
        title = f"#{rank}  {stem}" if prefix else stem
        panel = V.error_panel(item.image, item.gt, item.pred, evaluation.schema, title=title, tile=tile)
        rel = f"panels/{prefix}{rank:02d}_{safe_name(stem)}.png" if prefix else f"panels/all/{safe_name(stem)}.png"
        V.save_png(out_dir / rel, panel)
        links[stem] = rel
    return links


def write_report(ev: Evaluation, source, out_dir: str | Path, worst_k: int = 12, tile: int = 384,
                 all_panels: bool = False, title: str | None = None,
                 progress: Callable[[Iterable], Iterable] | None = None) -> dict[str, Path]:
    """Write report.html, report.md, summary.json, charts and panels for ``ev`` into ``out_dir``."""
    out = Path(out_dir)
    (out / "img").mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    schema = ev.schema
    names = list(schema.names)
    worst = ev.worst(worst_k)
    charts.iou_bars(out / "img/iou.png", names, ev.iou, V.class_palette(schema))
    charts.confusion_image(out / "img/confusion.png", ev.cm, names, orientation_pairs=schema.orientation_pairs())
    charts.error_split_chart(out / "img/errors.png", [(f"boundary band (≤{ev.boundary_px} px)", ev.regions.boundary),
                                                      ("interior", ev.regions.interior)], "Where the errors are")
    charts.miou_histogram(out / "img/miou_hist.png", [r.miou for r in ev.images],
                          worst[-1].miou if worst and len(worst) < len(ev.images) else None)
    worst_links = render_panels(source, [r.stem for r in worst], out, "worst", tile, ev, progress)
    all_links = render_panels(source, [r.stem for r in ev.images], out, "", tile, ev, progress) if all_panels else {}
    curves = report_pictures(source.run_dir, source.fold_dirs, out) if hasattr(source, "fold_dirs") else []
    tips = hints(ev)
    title = title or f"Segmentation report · {ev.name}"
    info = {"images": f"{len(ev.images)}", "classes": f"{schema.num_classes}", **ev.info}
    atomic_write(out / "report.html", html.report_page(ev, title, info, tips, worst, worst_links, all_links, curves))
    atomic_write(out / "report.md", markdown.report_markdown(ev, title, info, tips, worst, worst_links))
    atomic_write(out / "summary.json", summary.report_json(ev, worst))
    return {"html": out / "report.html", "md": out / "report.md", "json": out / "summary.json"}
