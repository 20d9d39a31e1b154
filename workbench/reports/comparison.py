"""Two evaluations of the same images side by side, as a report folder (report.html, report.md,
summary.json, img/, panels/ of the images that changed most, and each side's own full report in a
sub-folder). :func:`write_comparison` computes what changed (:class:`Comparison`), draws the charts
and panels, then writes each format (:mod:`.html`, :mod:`.markdown`, :mod:`.summary`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..core.atomic import atomic_write, remove_stale_temporaries
from ..evaluation.evaluate import Evaluation
from . import charts, html, markdown, summary
from . import panels as V
from .format import safe_name
from .report import write_report


@dataclass
class Comparison:
    """What every output format of a comparison shows."""
    a: Evaluation
    b: Evaluation
    names: tuple[str, str]
    common: list[str]                   # stems scored in both
    deltas: list[tuple[float, str]]     # (image mIoU of B - A, stem), ascending
    regress: list[tuple[float, str]]    # the most regressed images, worst first
    improve: list[tuple[float, str]]    # the most improved images, best first
    panels: dict[str, str]              # stem -> A/B panel, relative to the report folder
    sub_reports: dict[str, str]         # name -> folder of that side's full report

    @property
    def delta_miou(self) -> float:
        return self.b.miou - self.a.miou

    @property
    def n_better(self) -> int:
        return sum(1 for d, _ in self.deltas if d > 0)

    @property
    def n_worse(self) -> int:
        return sum(1 for d, _ in self.deltas if d < 0)

    @property
    def title(self) -> str:
        return f"Comparison · {self.names[0]} vs {self.names[1]}"

    @property
    def info(self) -> dict:
        """Header facts: image count, each side's source, and what both share (ground truth, photos)."""
        (na, nb), a, b = self.names, self.a.info, self.b.info
        info = {"images": str(len(self.common)), na: next(iter(a.values()), ""), nb: next(iter(b.values()), "")}
        for key in ("ground truth", "images", "dataset"):
            if key in a and a.get(key) == b.get(key):
                info[key if key != "images" else "photos"] = a[key]
        return info


def write_comparison(ev_a: Evaluation, ev_b: Evaluation, src_a, src_b, out_dir: str | Path,
                     names: tuple[str, str] = ("A", "B"), k: int = 6, tile: int = 320,
                     sub_reports: bool = True, worst_k: int = 8,
                     progress: Callable[[Iterable], Iterable] | None = None) -> dict[str, Path]:
    """Side-by-side report of two evaluations over the same images, with per-class deltas and the
    images that changed most. Each side's own full report goes into a sub-folder."""
    out = Path(out_dir)
    (out / "img").mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    na, nb = names
    schema = ev_a.schema
    if ev_b.schema.names != schema.names:
        raise ValueError("the two evaluations use different class schemas")
    cls = list(schema.names)
    charts.iou_compare_bars(out / "img/iou_compare.png", cls, ev_a.iou, ev_b.iou, names)
    charts.confusion_image(out / "img/confusion_a.png", ev_a.cm, cls, title=f"{na}",
                           orientation_pairs=schema.orientation_pairs())
    charts.confusion_image(out / "img/confusion_b.png", ev_b.cm, cls, title=f"{nb}",
                           orientation_pairs=schema.orientation_pairs())
    charts.confusion_delta_image(out / "img/confusion_delta.png", ev_a.cm, ev_b.cm, cls, names)
    rows = []
    for label, ev in ((na, ev_a), (nb, ev_b)):
        rows += [(f"{label} · boundary", ev.regions.boundary), (f"{label} · interior", ev.regions.interior)]
    charts.error_split_chart(out / "img/errors_compare.png", rows, "Where the errors are")
    by_a, by_b = ev_a.by_stem(), ev_b.by_stem()
    common = [s for s in by_a if s in by_b]
    charts.miou_scatter(out / "img/scatter.png", [by_a[s].miou for s in common], [by_b[s].miou for s in common], names)
    deltas = sorted(((by_b[s].miou - by_a[s].miou, s) for s in common
                     if math.isfinite(by_a[s].miou) and math.isfinite(by_b[s].miou)))
    regress = [(d, s) for d, s in deltas if d < 0][:k]
    improve = [(d, s) for d, s in reversed(deltas) if d > 0][:k]
    links = {}
    seq = [("regress", i, s) for i, (_, s) in enumerate(regress, 1)] + [("improve", i, s) for i, (_, s) in enumerate(improve, 1)]
    for kind, rank, stem in (progress(seq) if progress else seq):
        a, b = src_a.get(stem), src_b.get(stem)
        panel = V.comparison_panel(a.image if a.image is not None else b.image, a.gt, a.pred, b.pred, schema,
                                   names, title=stem, tile=tile)
        rel = f"panels/{kind}{rank:02d}_{safe_name(stem)}.png"
        V.save_png(out / rel, panel)
        links[stem] = rel
    sub = {}
    if sub_reports:
        for label, ev, src in ((na, ev_a, src_a), (nb, ev_b, src_b)):
            d = safe_name(label)
            if d in sub.values():
                d += "_b"
            write_report(ev, src, out / d, worst_k=worst_k, tile=384, title=f"Segmentation report · {label}",
                         progress=progress)
            sub[label] = d
    cmp = Comparison(ev_a, ev_b, names, common, deltas, regress, improve, links, sub)
    atomic_write(out / "report.html", html.comparison_page(cmp))
    atomic_write(out / "report.md", markdown.comparison_markdown(cmp))
    atomic_write(out / "summary.json", summary.comparison_json(cmp))
    return {"html": out / "report.html", "md": out / "report.md", "json": out / "summary.json"}
