"""report.html of a report and of a comparison: self-contained pages (CSS inline, charts and panels
beside them in the same folder)."""

from __future__ import annotations

import datetime as _dt
import html
import math
from typing import TYPE_CHECKING

import numpy as np

from ..evaluation import error_kinds as E
from ..evaluation.evaluate import Evaluation
from . import panels as V
from .format import hex_colour, href, num, pct, signed

if TYPE_CHECKING:
    from .comparison import Comparison


def _e(s) -> str:
    return html.escape(str(s))


def _delta_class(d: float, eps: float = 5e-4) -> str:
    if d is None or not math.isfinite(d) or abs(d) < eps:
        return ""
    return "pos" if d > 0 else "neg"


def _swatch(rgb) -> str:
    return f'<span class="sw" style="background:{hex_colour(rgb)}"></span>'


def _bar(v: float, colour: str = "#3b82f6") -> str:
    w = 0 if v is None or not math.isfinite(v) else max(0.0, min(1.0, v)) * 100
    return f'<div class="bar"><span style="width:{w:.1f}%;background:{colour}"></span></div>'


CSS = """
:root{--bg:#f3f4f6;--card:#fff;--ink:#1f2329;--muted:#6b7280;--line:#e7e9ee;--good:#1f9254;--bad:#d33b2f;
--dark:#17191e}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;background:var(--bg);
color:var(--ink)}
header{background:var(--dark);color:#eef0f3;padding:26px 40px 22px}
header h1{margin:0;font-size:25px;font-weight:700;letter-spacing:-.01em}
header .sub{color:#a3aab6;font-size:13px;margin-top:6px}
header dl{display:flex;flex-wrap:wrap;gap:4px 26px;margin:12px 0 0;font-size:12.5px}
header dt{color:#7f8794;display:inline}header dd{display:inline;margin:0 0 0 6px;color:#d5d9e0;word-break:break-all}
nav{position:sticky;top:0;z-index:5;background:rgba(255,255,255,.94);backdrop-filter:blur(6px);
border-bottom:1px solid var(--line);padding:9px 40px;white-space:nowrap;overflow-x:auto}
nav a{margin-right:20px;color:#4b5563;text-decoration:none;font-weight:600;font-size:13px}
nav a:hover{color:#111}
main{max-width:1680px;margin:0 auto;padding:22px 40px 64px}
section{background:var(--card);border-radius:14px;box-shadow:0 1px 2px rgba(16,24,40,.06),0 1px 3px rgba(16,24,40,.05);
padding:22px 26px;margin:0 0 22px}
h2{margin:0 0 4px;font-size:19px}h3{margin:18px 0 8px;font-size:15px}
p.lead{margin:0 0 16px;color:var(--muted);font-size:13.5px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(158px,1fr));gap:14px;margin:0 0 22px}
.card{background:var(--card);border-radius:14px;padding:15px 18px;box-shadow:0 1px 2px rgba(16,24,40,.06),
0 1px 3px rgba(16,24,40,.05)}
.card .l{color:var(--muted);font-size:11.5px;text-transform:uppercase;letter-spacing:.05em;font-weight:600}
.card .v{font-size:29px;font-weight:700;font-variant-numeric:tabular-nums;line-height:1.25}
.card .s{color:var(--muted);font-size:12.5px}
.card .v.t{font-size:19px;line-height:1.9;overflow-wrap:anywhere}
.grid2{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:26px;align-items:start}
.grid2.wide{grid-template-columns:minmax(0,1fr) minmax(0,1.35fr)}
@media (max-width:1100px){.grid2{grid-template-columns:1fr}}
@media (max-width:1350px){.grid2.wide{grid-template-columns:1fr}}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:13.5px}
th{font-size:11.5px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);font-weight:600;text-align:left}
th,td{padding:6px 10px;border-bottom:1px solid var(--line)}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.c{white-space:nowrap}
tr:hover td{background:#fafbfc}
.sw{display:inline-block;width:12px;height:12px;border-radius:3px;margin-right:8px;vertical-align:-1px;
border:1px solid rgba(0,0,0,.22)}
.bar{position:relative;height:8px;background:#eef0f4;border-radius:4px;min-width:90px}
.bar>span{position:absolute;left:0;top:0;bottom:0;border-radius:4px}
img.chart{max-width:100%;height:auto;display:block}
img.chart.half{max-width:min(100%,720px)}
.gallery figure{margin:0 0 26px}
.gallery img{width:100%;height:auto;border-radius:10px;display:block;background:var(--dark)}
figcaption{font-size:13px;color:var(--muted);margin:6px 2px 0}
figcaption b{color:var(--ink)}
.hints{margin:0;padding-left:20px}.hints li{margin:6px 0}
.pos{color:var(--good);font-weight:600}.neg{color:var(--bad);font-weight:600}
.tag{display:inline-block;font-size:11px;font-weight:700;color:#a21caf;background:#fae8ff;border-radius:4px;
padding:0 5px;margin-left:6px}
.kind{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
details summary{cursor:pointer;font-weight:600;margin:4px 0}
.muted{color:var(--muted)}
code{background:#f1f2f5;border-radius:4px;padding:1px 5px;font-size:12.5px}
footer{color:var(--muted);font-size:12px;text-align:center;margin-top:10px}
"""


def _page(title: str, subtitle: str, info: dict, nav: list[tuple[str, str]], body: str) -> str:
    dl = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in info.items())
    links = "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in nav)
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{_e(title)}</h1><div class=\"sub\">{_e(subtitle)}</div><dl>{dl}</dl></header>"
            f"<nav>{links}</nav><main>{body}<footer>carparts analysis · generated {now}</footer></main></body></html>\n")


def _card(label: str, value: str, sub: str = "", cls: str = "") -> str:
    return (f'<div class="card"><div class="l">{_e(label)}</div><div class="v {cls}">{value}</div>'
            f'<div class="s">{sub}</div></div>')

# ------------------------------------------------------------------------------------ shared sections

def _class_table(ev: Evaluation, palette: np.ndarray) -> str:
    cm = ev.cm
    iou = ev.iou
    gt_share = cm.sum(1) / max(cm.sum(), 1)
    pred_share = cm.sum(0) / max(cm.sum(), 1)
    orient = E.orientation_table(ev.schema)
    rows = []
    for i, name in enumerate(ev.schema.names):
        row = cm[i].astype(float).copy()
        row[i] = 0
        j = int(row.argmax())
        if row[j] > 0:
            s = row[j] / max(cm[i].sum(), 1)
            tag = '<span class="tag">orientation</span>' if orient[i, j] else ""
            mistaken = f"{_swatch(palette[j])}{_e(ev.schema.names[j])} <span class=muted>{pct(s)}</span>{tag}"
        else:
            mistaken = '<span class="muted">—</span>'
        rows.append(f"<tr><td class=c>{_swatch(palette[i])}{_e(name)}</td><td class=n>{num(iou[i])}</td>"
                    f"<td>{_bar(iou[i], hex_colour(palette[i]) if i != E.background_index(ev.schema) else '#6b7280')}</td>"
                    f"<td class=n>{pct(gt_share[i], 2)}</td><td class=n>{pct(pred_share[i], 2)}</td>"
                    f"<td class=c>{mistaken}</td></tr>")
    return ("<table><thead><tr><th>class</th><th class=n>IoU</th><th></th><th class=n>GT pixels</th>"
            "<th class=n>predicted</th><th>most often predicted as</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _region_table(evs: list[tuple[str, Evaluation]]) -> str:
    head = ("<tr><th>region</th><th class=n>pixels</th><th class=n>error rate</th><th class=n>share of errors</th>"
            + "".join(f'<th class=n><span class="kind" style="background:{hex_colour(E.ERROR_COLOURS[k])}"></span>'
                      f"{_e(E.ERROR_NAMES[k])}</th>" for k in E.ERROR_KINDS) + "</tr>")
    rows = []
    for label, ev in evs:
        r = ev.regions
        total = r.boundary.sum() + r.interior.sum()
        wrong = r.boundary[1:].sum() + r.interior[1:].sum()
        for name, counts in (("boundary", r.boundary), ("interior", r.interior)):
            n = max(counts.sum(), 1)
            cells = "".join(f"<td class=n>{pct(counts[k] / n, 2)}</td>" for k in E.ERROR_KINDS)
            prefix = f"<b>{_e(label)}</b> · " if label else ""
            rows.append(f"<tr><td>{prefix}{name}</td><td class=n>{pct(counts.sum() / max(total, 1))}</td>"
                        f"<td class=n>{pct(counts[1:].sum() / n, 2)}</td>"
                        f"<td class=n>{pct(counts[1:].sum() / max(wrong, 1))}</td>{cells}</tr>")
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _flip_html(ev: Evaluation) -> str:
    if ev.flip is None:
        return ('<p class="lead">Not measured: a predictions folder holds no prediction of the mirrored images. '
                "Pass <code>--model MODEL.safetensors</code> (with <code>--images</code>) to run the model on each "
                "image and its mirror, or analyse a training run's out-of-fold probabilities (<code>--oof</code>), "
                "which include the mirror's prediction.</p>")
    f = ev.flip
    return (f'<p class="lead">How often the prediction of the mirrored image - un-flipped, left/right labels '
            f"swapped - agrees with the prediction of the image itself ({_e(ev.flip_source)}). 100% means the "
            "model sees a mirrored car exactly as the same car; flip TTA can only help where they disagree.</p>"
            '<div class="cards">'
            + _card("all pixels", pct(f.score), f"{f.total:,} pixels")
            + _card("part pixels", pct(f.part_score), "where either prediction is a part")
            + _card("orientation swaps", pct(f.orientation_share) if f.orientation_swaps or f.total > f.agree else "n/a",
                    "of the disagreeing pixels")
            + "</div>")


def _images_table(ev: Evaluation, panel_links: dict[str, str]) -> str:
    rows = []
    for r in sorted(ev.images, key=lambda r: (not math.isfinite(r.miou), r.miou)):
        n = max(r.kinds.sum(), 1)
        stem = (f'<a href="{href(panel_links[r.stem])}">{_e(r.stem)}</a>' if r.stem in panel_links else _e(r.stem))
        flip = f"<td class=n>{pct(r.flip_agree)}</td>" if ev.flip is not None else ""
        rows.append(f"<tr><td>{stem}</td><td class=n>{num(r.miou)}</td><td class=n>{pct(r.pixel_acc)}</td>"
                    + "".join(f"<td class=n>{pct(r.kinds[k] / n, 2)}</td>" for k in E.ERROR_KINDS) + flip + "</tr>")
    head = ("<tr><th>image</th><th class=n>mIoU</th><th class=n>pixel acc.</th>"
            + "".join(f"<th class=n>{_e(E.ERROR_NAMES[k])}</th>" for k in E.ERROR_KINDS)
            + ("<th class=n>flip agreement</th>" if ev.flip is not None else "") + "</tr>")
    return (f"<details><summary>All {len(ev.images)} images, worst first</summary>"
            f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table></details>")


# ------------------------------------------------------------------------------------------- pages

def report_page(ev: Evaluation, title: str, info: dict, tips: list[str], worst: list, worst_links: dict[str, str],
                all_links: dict[str, str], curves: list[tuple[str, str]] = ()) -> str:
    """report.html of one evaluation: summary cards, hints, per-class IoU, confusion matrix, error
    anatomy, flip consistency, the worst-images gallery, the table of all images and, for a training
    run, its training curves (``curves``: caption and picture path)."""
    schema = ev.schema
    names = list(schema.names)
    palette = V.class_palette(schema)
    worst_cls = int(np.nanargmin(np.where(np.isfinite(ev.iou), ev.iou, np.inf))) if np.isfinite(ev.iou).any() else None
    cards = ('<div class="cards">'
             + _card("mIoU (dataset)", num(ev.miou), f"{schema.num_classes} classes, background included")
             + _card("mean image mIoU", num(ev.mean_image_miou), f"over {len(ev.images)} images")
             + _card("pixel accuracy", pct(ev.pixel_acc))
             + _card("errors at boundaries", pct(ev.regions.boundary_error_share, 0),
                     f"within {ev.boundary_px} px of an edge ({pct(ev.regions.boundary_pixel_share, 0)} of pixels)")
             + _card("flip consistency", pct(ev.flip.score) if ev.flip else "n/a",
                     f"parts: {pct(ev.flip.part_score)}" if ev.flip else "no mirror predictions")
             + (_card("weakest class", _e(names[worst_cls]), f"IoU {num(ev.iou[worst_cls])}", "t") if worst_cls is not None else "")
             + "</div>")
    hint_html = ("<ul class=hints>" + "".join(f"<li>{h}</li>" for h in tips) + "</ul>") if tips else "<p>No hints.</p>"
    gallery = "".join(
        f'<figure><a href="{href(worst_links[r.stem])}"><img loading="lazy" src="{href(worst_links[r.stem])}" '
        f'alt="error map of {_e(r.stem)}"></a><figcaption><b>#{k} {_e(r.stem)}</b> · image mIoU {num(r.miou)} · '
        f"pixel accuracy {pct(r.pixel_acc)}</figcaption></figure>"
        for k, r in enumerate(worst, 1))
    body = (
        cards
        + f'<section id="next"><h2>What to try next</h2><p class="lead">Heuristics from the numbers below; '
          f"check them against the gallery.</p>{hint_html}</section>"
        + f'<section id="classes"><h2>Per-class IoU</h2><p class="lead">Dataset-level IoU (all pixels of all '
          f'images pooled). Classes absent from both ground truth and prediction show n/a.</p>'
          f'<div class="grid2 wide"><div><img class="chart" src="img/iou.png" alt="per-class IoU chart"></div>'
          f'<div class="scroll">{_class_table(ev, palette)}</div></div></section>'
        + '<section id="confusion"><h2>Confusion matrix</h2><p class="lead">Row-normalised: each row shows where '
          "the pixels of one ground-truth class went. Magenta frames mark orientation pairs (left/right, "
          'front/rear).</p><img class="chart" src="img/confusion.png" alt="confusion matrix"></section>'
        + f'<section id="errors"><h2>Error anatomy</h2><p class="lead">Every pixel is correct, a <b>missed part</b> '
          f"(part predicted as background), a <b>false part</b> (background predicted as a part), a <b>part "
          f"confusion</b>, or an <b>orientation swap</b> (left/right or front/rear of the same part). The boundary "
          f"band holds the pixels within {ev.boundary_px} px of a ground-truth edge.</p>"
          f'<div class="grid2"><div><img class="chart" src="img/errors.png" alt="error split chart"></div>'
          f'<div><img class="chart" src="img/miou_hist.png" alt="per-image mIoU histogram"></div></div>'
          f'<div class="scroll">{_region_table([("", ev)])}</div></section>'
        + f'<section id="flip"><h2>Flip consistency</h2>{_flip_html(ev)}</section>'
        + f'<section id="gallery" class="gallery"><h2>Worst {len(worst)} images</h2><p class="lead">Lowest '
          f"per-image mIoU first. Each panel: photo, ground truth, prediction, errors (red missed, blue false part, "
          f"amber confusion, magenta orientation, faint green correct part). Click for full size.</p>{gallery}</section>"
        + f'<section id="images"><h2>Images</h2>{_images_table(ev, all_links or worst_links)}</section>'
        + _curves_section(curves))
    nav = [("next", "What to try"), ("classes", "Per-class IoU"), ("confusion", "Confusion"),
           ("errors", "Errors"), ("flip", "Flip"), ("gallery", "Worst images"), ("images", "All images")]
    nav += [("training", "Training curves")] if curves else []
    return _page(title, f"{len(ev.images)} images · mIoU {num(ev.miou)}", info, nav, body)


def _curves_section(curves: list[tuple[str, str]]) -> str:
    """The training run's curves (each fold's progress.png, the runs overlay); empty without any."""
    if not curves:
        return ""
    figures = "".join(f'<figure><a href="{href(rel)}"><img class="chart half" loading="lazy" src="{href(rel)}" '
                      f'alt="{_e(caption)}"></a><figcaption>{_e(caption)}</figcaption></figure>'
                      for caption, rel in curves)
    return ('<section id="training"><h2>Training curves</h2><p class="lead">Per epoch: train loss, validation '
            "mIoU (best epoch starred) and learning rate of each fold, as written during training; the overlay "
            "(<code>python -m analysis.runs</code>) compares every run's validation curve.</p>"
            f'<div class="grid2">{figures}</div></section>')


def comparison_page(cmp: Comparison) -> str:
    """report.html of a comparison: delta cards, per-class IoU with deltas, both confusion matrices and
    their change, the error anatomy of each side, flip consistency and the A/B galleries."""
    ev_a, ev_b, (na, nb), common = cmp.a, cmp.b, cmp.names, cmp.common
    links, sub, regress, improve = cmp.panels, cmp.sub_reports, cmp.regress, cmp.improve
    by_a, by_b = ev_a.by_stem(), ev_b.by_stem()
    cls = list(ev_a.schema.names)
    palette = V.class_palette(ev_a.schema)

    def delta_card(label, va, vb, fmt=num, points=False):
        d = vb - va
        ds = (f"{100 * d:+.1f} pp" if points else signed(d)) if math.isfinite(d) else "n/a"
        return _card(label, f'{fmt(va)} → {fmt(vb)}', f'<span class="{_delta_class(d)}">{ds}</span>')

    cards = '<div class="cards">' + delta_card("mIoU (dataset)", ev_a.miou, ev_b.miou) + delta_card(
        "mean image mIoU", ev_a.mean_image_miou, ev_b.mean_image_miou) + delta_card(
        "pixel accuracy", ev_a.pixel_acc, ev_b.pixel_acc, pct, True)
    if ev_a.flip and ev_b.flip:
        cards += delta_card("flip consistency", ev_a.flip.score, ev_b.flip.score, pct, True)
    cards += _card("images better / worse", f'<span class="pos">{cmp.n_better}</span> / '
                   f'<span class="neg">{cmp.n_worse}</span>', f"of {len(common)} in both") + "</div>"
    crow = []
    for i, n in enumerate(cls):
        d = ev_b.iou[i] - ev_a.iou[i]
        crow.append(f"<tr><td class=c>{_swatch(palette[i])}{_e(n)}</td><td class=n>{num(ev_a.iou[i])}</td>"
                    f"<td class=n>{num(ev_b.iou[i])}</td><td class='n {_delta_class(d)}'>{signed(d)}</td></tr>")
    d_m = cmp.delta_miou
    crow.append(f"<tr><td><b>mean</b></td><td class=n><b>{num(ev_a.miou)}</b></td><td class=n><b>{num(ev_b.miou)}</b></td>"
                f"<td class='n {_delta_class(d_m)}'>{signed(d_m)}</td></tr>")
    class_table = (f"<table><thead><tr><th>class</th><th class=n>{_e(na)}</th><th class=n>{_e(nb)}</th>"
                   f"<th class=n>Δ (B − A)</th></tr></thead><tbody>{''.join(crow)}</tbody></table>")

    def gallery(items, word):
        if not items:
            return f'<p class="muted">No image got {word}.</p>'
        return "".join(
            f'<figure><a href="{href(links[s])}"><img loading="lazy" src="{href(links[s])}" alt="{_e(s)}"></a>'
            f"<figcaption><b>{_e(s)}</b> · image mIoU {num(by_a[s].miou)} → {num(by_b[s].miou)} "
            f'(<span class="{_delta_class(d)}">{signed(d)}</span>)</figcaption></figure>' for d, s in items)

    flip_rows = ""
    if ev_a.flip or ev_b.flip:
        flip_rows = ('<section id="flip"><h2>Flip consistency</h2><div class="grid2">'
                     + f"<div><h3>{_e(na)}</h3>{_flip_html(ev_a)}</div><div><h3>{_e(nb)}</h3>{_flip_html(ev_b)}</div>"
                     + "</div></section>")
    subs = ""
    if sub:
        subs = ('<p class="lead">Full single reports: '
                + " · ".join(f'<a href="{href(d)}/report.html">{_e(label)}</a>' for label, d in sub.items()) + "</p>")
    body = (
        cards
        + f'<section id="classes"><h2>Per-class IoU</h2><p class="lead">{_e(na)} vs {_e(nb)} on the same '
          f"{len(common)} images; green = {_e(nb)} better.</p>{subs}"
          f'<div class="grid2"><div><img class="chart" src="img/iou_compare.png" alt="per-class IoU comparison">'
          f"</div><div>{class_table}</div></div></section>"
        + f'<section id="confusion"><h2>Confusion matrices</h2><div class="grid2">'
          f'<div><img class="chart" src="img/confusion_a.png" alt="confusion {_e(na)}"></div>'
          f'<div><img class="chart" src="img/confusion_b.png" alt="confusion {_e(nb)}"></div></div>'
          f'<h3>What changed</h3><div class="grid2"><div><img class="chart" src="img/confusion_delta.png" '
          f'alt="confusion change"></div><div><img class="chart" src="img/scatter.png" alt="per-image scatter">'
          f"</div></div></section>"
        + f'<section id="errors"><h2>Error anatomy</h2><img class="chart half" src="img/errors_compare.png" '
          f'alt="error split comparison">{_region_table([(na, ev_a), (nb, ev_b)])}</section>'
        + flip_rows
        + f'<section id="regress" class="gallery"><h2>Biggest regressions ({_e(nb)} worse)</h2><p class="lead">'
          f"Top row {_e(na)}, bottom row {_e(nb)}; the change map shows pixels {_e(nb)} fixed (green) or broke "
          f"(red).</p>{gallery(regress, 'worse')}</section>"
        + f'<section id="improve" class="gallery"><h2>Biggest improvements ({_e(nb)} better)</h2>'
          f"{gallery(improve, 'better')}</section>")
    nav = [("classes", "Per-class IoU"), ("confusion", "Confusion"), ("errors", "Errors")] + (
        [("flip", "Flip")] if flip_rows else []) + [("regress", "Regressions"), ("improve", "Improvements")]
    return _page(cmp.title, f"mIoU {num(ev_a.miou)} → {num(ev_b.miou)} ({signed(d_m)})", cmp.info, nav, body)
