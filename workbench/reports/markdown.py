"""report.md of a report and of a comparison (GitHub-flavoured Markdown, images linked beside it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..evaluation import error_kinds as E
from ..evaluation.evaluate import Evaluation
from .format import href, md_text, num, pct, signed
from .hints import hint_parts

if TYPE_CHECKING:
    from .comparison import Comparison


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _plain(s: str) -> str:
    """HTML hint -> Markdown (its text escaped, its bold phrase in ``**``)."""
    return "".join(f"**{md_text(t)}**" if bold else md_text(t) for t, bold in hint_parts(s))


def report_markdown(ev: Evaluation, title: str, info: dict, tips: list[str], worst: list,
                    worst_links: dict[str, str]) -> str:
    names = [md_text(n) for n in ev.schema.names]  # every user string is escaped (class, file, run names)
    md = [f"# {md_text(title)}", "", " · ".join(f"{md_text(k)}: {md_text(v)}" for k, v in info.items()), "",
          f"- **mIoU (dataset)**: {num(ev.miou)}  ·  mean image mIoU {num(ev.mean_image_miou)}  ·  pixel accuracy {pct(ev.pixel_acc)}",
          f"- **errors at boundaries**: {pct(ev.regions.boundary_error_share)} of wrong pixels lie within "
          f"{ev.boundary_px} px of a GT edge ({pct(ev.regions.boundary_pixel_share)} of pixels); error rate "
          f"{pct(ev.regions.boundary_error_rate, 2)} there vs {pct(ev.regions.interior_error_rate, 2)} in interiors",
          "- **flip consistency**: " + (f"{pct(ev.flip.score, 2)} of pixels, {pct(ev.flip.part_score, 2)} of part pixels"
                                         if ev.flip else "not measured (no mirror predictions)"),
          "", "## What to try next", ""] + [f"- {_plain(h)}" for h in tips] + [
          "", "## Per-class IoU", "", "![per-class IoU](img/iou.png)", "",
          _md_table(["class", "IoU", "GT pixels"], [[n, num(v), pct(s, 2)] for n, v, s in
                                                   zip(names, ev.iou, ev.cm.sum(1) / max(ev.cm.sum(), 1))]),
          "", "## Confusion matrix", "", "![confusion matrix](img/confusion.png)", "",
          "Top confusions (share of the ground-truth class):", ""]
    md += [f"- {names[i]} → {names[j]}: {pct(s)}{' (orientation)' if o else ''}" for i, j, _, s, o in ev.top_confusions(8)]
    t = ev.kind_totals()
    md += ["", "## Error anatomy", "", "![error split](img/errors.png)", "",
           _md_table(["error kind", "share of wrong pixels"],
                     [[E.ERROR_NAMES[k], pct(t[k] / max(t[1:].sum(), 1))] for k in E.ERROR_KINDS]),
           "", f"## Worst {len(worst)} images", ""]
    md += [f"{k}. **{md_text(r.stem)}** (image mIoU {num(r.miou)}): ![{md_text(r.stem)}]({href(worst_links[r.stem])})"
           for k, r in enumerate(worst, 1)]
    return "\n".join(md) + "\n"


def comparison_markdown(cmp: Comparison) -> str:
    ev_a, ev_b, (na, nb), common = cmp.a, cmp.b, cmp.names, cmp.common
    links, sub, regress, improve = cmp.panels, cmp.sub_reports, cmp.regress, cmp.improve
    by_a, by_b = ev_a.by_stem(), ev_b.by_stem()
    cls = [md_text(n) for n in ev_a.schema.names]
    na, nb = md_text(na), md_text(nb)
    d_m = cmp.delta_miou
    md = [f"# {md_text(cmp.title)}", "", f"{len(common)} images. A = {na}, B = {nb}; Δ = B − A (positive: B is better).", "",
          _md_table(["", na, nb, "Δ (B − A)"], [
              ["mIoU (dataset)", num(ev_a.miou), num(ev_b.miou), signed(d_m)],
              ["mean image mIoU", num(ev_a.mean_image_miou), num(ev_b.mean_image_miou),
               signed(ev_b.mean_image_miou - ev_a.mean_image_miou)],
              ["pixel accuracy", pct(ev_a.pixel_acc, 2), pct(ev_b.pixel_acc, 2),
               f"{100 * (ev_b.pixel_acc - ev_a.pixel_acc):+.2f} pp"],
              ["errors at boundaries", pct(ev_a.regions.boundary_error_share), pct(ev_b.regions.boundary_error_share), ""],
              ["flip consistency", pct(ev_a.flip.score, 2) if ev_a.flip else "n/a",
               pct(ev_b.flip.score, 2) if ev_b.flip else "n/a", ""],
              ["images better / worse", "", "", f"{cmp.n_better} / {cmp.n_worse}"]]),
          "", "## Per-class IoU", "", "![per-class IoU](img/iou_compare.png)", "",
          _md_table(["class", na, nb, "Δ (B − A)"], [[n, num(ev_a.iou[i]), num(ev_b.iou[i]), signed(ev_b.iou[i] - ev_a.iou[i])]
                                             for i, n in enumerate(cls)]),
          "", "## Biggest regressions", ""]
    md += [f"- **{md_text(s)}** {num(by_a[s].miou)} → {num(by_b[s].miou)} ({signed(d)}): ![{md_text(s)}]({href(links[s])})"
           for d, s in regress]
    md += ["", "## Biggest improvements", ""]
    md += [f"- **{md_text(s)}** {num(by_a[s].miou)} → {num(by_b[s].miou)} ({signed(d)}): ![{md_text(s)}]({href(links[s])})"
           for d, s in improve]
    if sub:
        md += ["", "Full reports: " + ", ".join(f"[{md_text(label)}]({href(d)}/report.md)" for label, d in sub.items())]
    return "\n".join(md) + "\n"
