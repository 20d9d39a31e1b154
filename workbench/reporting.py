"""Analysis reports: a self-contained HTML page (images beside it in the same folder), a Markdown
summary, a JSON summary and a console summary - for one evaluation, or two compared side by side.

Layout of an output folder::

    report.html  report.md  summary.json
    img/         charts (per-class IoU, confusion matrix, error split, per-image mIoU)
    panels/      error-map panels of the worst images (``--all-panels``: panels/all/ for every image)
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import quote

import numpy as np

from . import charts
from . import errors as E
from . import visualize as V
from .evaluation import Evaluation

# ------------------------------------------------------------------------------------------- helpers


def safe_name(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:120] or "image"


def _f(v: float, nd: int = 3) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.{nd}f}"


def _pct(v: float, nd: int = 1) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.{nd}f}%"


def _signed(v: float, nd: int = 3) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:+.{nd}f}"


def _e(s) -> str:
    return html.escape(str(s))


def _href(path: str) -> str:
    return quote(path)


def _hex(rgb) -> str:
    return "#%02x%02x%02x" % tuple(int(v) for v in rgb)


def _delta_class(d: float, eps: float = 5e-4) -> str:
    if d is None or not math.isfinite(d) or abs(d) < eps:
        return ""
    return "pos" if d > 0 else "neg"


def _swatch(rgb) -> str:
    return f'<span class="sw" style="background:{_hex(rgb)}"></span>'


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


# ----------------------------------------------------------------------------------------- hints

def hints(ev: Evaluation) -> list[str]:
    """Plain-language suggestions of what to try next, from the error statistics."""
    out = []
    names = ev.schema.names
    totals = ev.kind_totals().astype(float)
    wrong = totals[1:].sum()
    if wrong == 0:
        return ["No errors at all on these images: nothing to fix here (is the ground truth also the prediction?)."]
    share = {k: totals[k] / wrong for k in E.ERROR_KINDS}
    conf = ev.top_confusions(30)
    conf = [c for c in conf if c[3] >= 0.02]
    orient = [c for c in conf if c[4]]
    if share[E.ORIENTATION] >= 0.08 and orient:
        top = ", ".join(f"{names[i]} → {names[j]} ({100 * s:.0f}% of {names[i]})" for i, j, _, s, _ in orient[:3])
        out.append(f"<b>Orientation mix-ups</b> are {100 * share[E.ORIENTATION]:.0f}% of wrong pixels ({top}). "
                   "Check that flip augmentation relabels left/right pairs (schema flip permutation), use "
                   "orientation-aware flip TTA, and keep enough context in crops to see which side of the car is shown.")
    b_share, b_pix = ev.regions.boundary_error_share, ev.regions.boundary_pixel_share
    if math.isfinite(b_share) and b_share >= 0.5 and b_share >= 2 * b_pix:
        out.append(f"<b>Boundaries</b>: {100 * b_share:.0f}% of wrong pixels lie within {ev.boundary_px} px of a "
                   f"ground-truth edge, a band holding only {100 * b_pix:.0f}% of pixels. Outline quality is the "
                   "lever: higher input resolution, a decoder with high-resolution skips (UNet), a boundary-aware "
                   "loss (Lovász / boundary), or upsampling probabilities before arg-max.")
    elif math.isfinite(b_share) and b_share <= 0.5:
        out.append(f"<b>Interiors</b>: {100 * (1 - b_share):.0f}% of wrong pixels are more than {ev.boundary_px} px "
                   "from any ground-truth edge - whole regions are misread, not just outlines. A stronger encoder, "
                   "more or more varied training data, and longer training help more than boundary tricks.")
    if share[E.MISSED] >= 0.3 and share[E.MISSED] > 1.5 * share[E.FALSE_PART]:
        out.append(f"<b>Missed parts</b> dominate ({100 * share[E.MISSED]:.0f}% of wrong pixels): parts are "
                   "predicted as background. Try Dice/Lovász loss next to cross-entropy, a lower background "
                   "weight, or crops that keep small parts large enough to see.")
    if share[E.FALSE_PART] >= 0.3 and share[E.FALSE_PART] > 1.5 * share[E.MISSED]:
        out.append(f"<b>False parts</b> on background dominate ({100 * share[E.FALSE_PART]:.0f}% of wrong "
                   "pixels): try prediction cleanup (drop small components), more images with cluttered "
                   "background, or hard-negative crops.")
    plain = [c for c in conf if not c[4]]
    bg = E.background_index(ev.schema)
    plain = [c for c in plain if bg not in (c[0], c[1])]
    if share[E.CONFUSION] >= 0.15 and plain:
        top = ", ".join(f"{names[i]} → {names[j]} ({100 * s:.0f}%)" for i, j, _, s, _ in plain[:3])
        out.append(f"<b>Part confusions</b> are {100 * share[E.CONFUSION]:.0f}% of wrong pixels, mostly {top}. "
                   "Look at these pairs in the gallery: if the annotation itself is ambiguous (e.g. trunk vs "
                   "tailgate), consider merging or relabelling; otherwise more examples of those parts help.")
    iou = ev.iou
    gt_share = ev.cm.sum(1) / max(ev.cm.sum(), 1)
    if np.isfinite(iou).any():
        m = float(np.nanmean(iou))
        weak = [i for i in np.argsort(np.where(np.isfinite(iou), iou, 9)) if math.isfinite(iou[i]) and iou[i] < m - 0.15]
        if weak:
            small = [i for i in weak if 0 < gt_share[i] < 0.01]
            desc = ", ".join(f"{names[i]} ({iou[i]:.2f})" for i in weak[:5])
            tip = (" Most are small parts: oversample images that contain them, use class-balanced or Dice loss, "
                   "and a higher input resolution." if len(small) * 2 >= len(weak) else
                   " Look at their confusions in the matrix above to see what they are taken for.")
            out.append(f"<b>Weak classes</b> well below the mean IoU: {desc}.{tip}")
    if ev.flip is not None and math.isfinite(ev.flip.part_score) and ev.flip.part_score < 0.95:
        out.append(f"<b>Flip consistency</b> on parts is only {100 * ev.flip.part_score:.1f}%: the model answers "
                   "differently for a mirrored car. Flip TTA averages the two views; training with relabelled "
                   "flips makes the model itself more consistent.")
    if len(ev.images) >= 10:
        worst = ev.worst(max(1, len(ev.images) // 10))
        m_worst = np.mean([r.miou for r in worst])
        if math.isfinite(ev.mean_image_miou) and ev.mean_image_miou - m_worst > 0.3:
            out.append(f"<b>Outlier images</b>: the worst 10% average an image mIoU of {m_worst:.2f} against "
                       f"{ev.mean_image_miou:.2f} overall. Check the gallery for a common cause (unusual views, "
                       "occlusion, several cars, label errors) before changing the model.")
    return out


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
            mistaken = f"{_swatch(palette[j])}{_e(ev.schema.names[j])} <span class=muted>{_pct(s)}</span>{tag}"
        else:
            mistaken = '<span class="muted">—</span>'
        rows.append(f"<tr><td class=c>{_swatch(palette[i])}{_e(name)}</td><td class=n>{_f(iou[i])}</td>"
                    f"<td>{_bar(iou[i], _hex(palette[i]) if i != E.background_index(ev.schema) else '#6b7280')}</td>"
                    f"<td class=n>{_pct(gt_share[i], 2)}</td><td class=n>{_pct(pred_share[i], 2)}</td>"
                    f"<td class=c>{mistaken}</td></tr>")
    return ("<table><thead><tr><th>class</th><th class=n>IoU</th><th></th><th class=n>GT pixels</th>"
            "<th class=n>predicted</th><th>most often predicted as</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _region_rows(ev: Evaluation) -> list[tuple[str, np.ndarray]]:
    return [(f"boundary band (≤{ev.boundary_px} px)", ev.regions.boundary), ("interior", ev.regions.interior)]


def _region_table(evs: list[tuple[str, Evaluation]]) -> str:
    head = ("<tr><th>region</th><th class=n>pixels</th><th class=n>error rate</th><th class=n>share of errors</th>"
            + "".join(f'<th class=n><span class="kind" style="background:{_hex(E.ERROR_COLOURS[k])}"></span>'
                      f"{_e(E.ERROR_NAMES[k])}</th>" for k in E.ERROR_KINDS) + "</tr>")
    rows = []
    for label, ev in evs:
        r = ev.regions
        total = r.boundary.sum() + r.interior.sum()
        wrong = r.boundary[1:].sum() + r.interior[1:].sum()
        for name, counts in (("boundary", r.boundary), ("interior", r.interior)):
            n = max(counts.sum(), 1)
            cells = "".join(f"<td class=n>{_pct(counts[k] / n, 2)}</td>" for k in E.ERROR_KINDS)
            prefix = f"<b>{_e(label)}</b> · " if label else ""
            rows.append(f"<tr><td>{prefix}{name}</td><td class=n>{_pct(counts.sum() / max(total, 1))}</td>"
                        f"<td class=n>{_pct(counts[1:].sum() / n, 2)}</td>"
                        f"<td class=n>{_pct(counts[1:].sum() / max(wrong, 1))}</td>{cells}</tr>")
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
            + _card("all pixels", _pct(f.score), f"{f.total:,} pixels")
            + _card("part pixels", _pct(f.part_score), "where either prediction is a part")
            + _card("orientation swaps", _pct(f.orientation_share) if f.orientation_swaps or f.total > f.agree else "n/a",
                    "of the disagreeing pixels")
            + "</div>")


def _images_table(ev: Evaluation, panel_links: dict[str, str]) -> str:
    rows = []
    for r in sorted(ev.images, key=lambda r: (not math.isfinite(r.miou), r.miou)):
        n = max(r.kinds.sum(), 1)
        stem = (f'<a href="{_href(panel_links[r.stem])}">{_e(r.stem)}</a>' if r.stem in panel_links else _e(r.stem))
        flip = f"<td class=n>{_pct(r.flip_agree)}</td>" if ev.flip is not None else ""
        rows.append(f"<tr><td>{stem}</td><td class=n>{_f(r.miou)}</td><td class=n>{_pct(r.pixel_acc)}</td>"
                    + "".join(f"<td class=n>{_pct(r.kinds[k] / n, 2)}</td>" for k in E.ERROR_KINDS) + flip + "</tr>")
    head = ("<tr><th>image</th><th class=n>mIoU</th><th class=n>pixel acc.</th>"
            + "".join(f"<th class=n>{_e(E.ERROR_NAMES[k])}</th>" for k in E.ERROR_KINDS)
            + ("<th class=n>flip agreement</th>" if ev.flip is not None else "") + "</tr>")
    return (f"<details><summary>All {len(ev.images)} images, worst first</summary>"
            f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table></details>")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _plain(s: str) -> str:
    """HTML hint -> Markdown."""
    return re.sub(r"</?b>", "**", s)


# --------------------------------------------------------------------------------------- one report

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
    schema = ev.schema
    palette = V.class_palette(schema)
    names = list(schema.names)
    worst = ev.worst(worst_k)
    charts.iou_bars(out / "img/iou.png", names, ev.iou, palette)
    charts.confusion_image(out / "img/confusion.png", ev.cm, names, orientation_pairs=schema.orientation_pairs())
    charts.error_split_chart(out / "img/errors.png", _region_rows(ev), "Where the errors are")
    charts.miou_histogram(out / "img/miou_hist.png", [r.miou for r in ev.images],
                          worst[-1].miou if worst and len(worst) < len(ev.images) else None)
    worst_links = render_panels(source, [r.stem for r in worst], out, "worst", tile, ev, progress)
    all_links = render_panels(source, [r.stem for r in ev.images], out, "", tile, ev, progress) if all_panels else {}
    tips = hints(ev)
    title = title or f"Segmentation report · {ev.name}"
    info = {"images": f"{len(ev.images)}", "classes": f"{schema.num_classes}", **ev.info}

    # ---- html
    worst_cls = int(np.nanargmin(np.where(np.isfinite(ev.iou), ev.iou, np.inf))) if np.isfinite(ev.iou).any() else None
    cards = ('<div class="cards">'
             + _card("mIoU (dataset)", _f(ev.miou), f"{schema.num_classes} classes, background included")
             + _card("mean image mIoU", _f(ev.mean_image_miou), f"over {len(ev.images)} images")
             + _card("pixel accuracy", _pct(ev.pixel_acc))
             + _card("errors at boundaries", _pct(ev.regions.boundary_error_share, 0),
                     f"within {ev.boundary_px} px of an edge ({_pct(ev.regions.boundary_pixel_share, 0)} of pixels)")
             + _card("flip consistency", _pct(ev.flip.score) if ev.flip else "n/a",
                     f"parts: {_pct(ev.flip.part_score)}" if ev.flip else "no mirror predictions")
             + (_card("weakest class", _e(names[worst_cls]), f"IoU {_f(ev.iou[worst_cls])}", "t") if worst_cls is not None else "")
             + "</div>")
    hint_html = ("<ul class=hints>" + "".join(f"<li>{h}</li>" for h in tips) + "</ul>") if tips else "<p>No hints.</p>"
    gallery = "".join(
        f'<figure><a href="{_href(worst_links[r.stem])}"><img loading="lazy" src="{_href(worst_links[r.stem])}" '
        f'alt="error map of {_e(r.stem)}"></a><figcaption><b>#{k} {_e(r.stem)}</b> · image mIoU {_f(r.miou)} · '
        f"pixel accuracy {_pct(r.pixel_acc)}</figcaption></figure>"
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
        + f'<section id="images"><h2>Images</h2>{_images_table(ev, all_links or worst_links)}</section>')
    nav = [("next", "What to try"), ("classes", "Per-class IoU"), ("confusion", "Confusion"),
           ("errors", "Errors"), ("flip", "Flip"), ("gallery", "Worst images"), ("images", "All images")]
    (out / "report.html").write_text(_page(title, f"{len(ev.images)} images · mIoU {_f(ev.miou)}", info, nav, body))

    # ---- markdown
    md = [f"# {title}", "", " · ".join(f"{k}: `{v}`" for k, v in info.items()), "",
          f"- **mIoU (dataset)**: {_f(ev.miou)}  ·  mean image mIoU {_f(ev.mean_image_miou)}  ·  pixel accuracy {_pct(ev.pixel_acc)}",
          f"- **errors at boundaries**: {_pct(ev.regions.boundary_error_share)} of wrong pixels lie within "
          f"{ev.boundary_px} px of a GT edge ({_pct(ev.regions.boundary_pixel_share)} of pixels); error rate "
          f"{_pct(ev.regions.boundary_error_rate, 2)} there vs {_pct(ev.regions.interior_error_rate, 2)} in interiors",
          "- **flip consistency**: " + (f"{_pct(ev.flip.score, 2)} of pixels, {_pct(ev.flip.part_score, 2)} of part pixels"
                                         if ev.flip else "not measured (no mirror predictions)"),
          "", "## What to try next", ""] + [f"- {_plain(h)}" for h in tips] + [
          "", "## Per-class IoU", "", "![per-class IoU](img/iou.png)", "",
          _md_table(["class", "IoU", "GT pixels"], [[n, _f(v), _pct(s, 2)] for n, v, s in
                                                   zip(names, ev.iou, ev.cm.sum(1) / max(ev.cm.sum(), 1))]),
          "", "## Confusion matrix", "", "![confusion matrix](img/confusion.png)", "",
          "Top confusions (share of the ground-truth class):", ""]
    md += [f"- {names[i]} → {names[j]}: {_pct(s)}{' (orientation)' if o else ''}" for i, j, _, s, o in ev.top_confusions(8)]
    t = ev.kind_totals()
    md += ["", "## Error anatomy", "", "![error split](img/errors.png)", "",
           _md_table(["error kind", "share of wrong pixels"],
                     [[E.ERROR_NAMES[k], _pct(t[k] / max(t[1:].sum(), 1))] for k in E.ERROR_KINDS]),
           "", f"## Worst {len(worst)} images", ""]
    md += [f"{k}. **{r.stem}** (image mIoU {_f(r.miou)}): ![{r.stem}]({_href(worst_links[r.stem])})"
           for k, r in enumerate(worst, 1)]
    (out / "report.md").write_text("\n".join(md) + "\n")
    (out / "summary.json").write_text(json.dumps(_jsonable(ev.summary() | {"worst": [
        {"stem": r.stem, "miou": r.miou} for r in worst]}), indent=1))
    return {"html": out / "report.html", "md": out / "report.md", "json": out / "summary.json"}


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


# --------------------------------------------------------------------------------------- comparison

def write_comparison(ev_a: Evaluation, ev_b: Evaluation, src_a, src_b, out_dir: str | Path,
                     names: tuple[str, str] = ("A", "B"), k: int = 6, tile: int = 320,
                     sub_reports: bool = True, worst_k: int = 8,
                     progress: Callable[[Iterable], Iterable] | None = None) -> dict[str, Path]:
    """Side-by-side report of two evaluations over the same images, with per-class deltas and the
    images that changed most. Each side's own full report goes into a sub-folder."""
    out = Path(out_dir)
    (out / "img").mkdir(parents=True, exist_ok=True)
    na, nb = names
    schema = ev_a.schema
    if ev_b.schema.names != schema.names:
        raise ValueError("the two evaluations use different class schemas")
    cls = list(schema.names)
    palette = V.class_palette(schema)
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

    # ---- html
    def delta_card(label, va, vb, fmt=_f, pct=False):
        d = vb - va
        ds = (f"{100 * d:+.1f} pp" if pct else _signed(d)) if math.isfinite(d) else "n/a"
        return _card(label, f'{fmt(va)} → {fmt(vb)}', f'<span class="{_delta_class(d)}">{ds}</span>')

    cards = '<div class="cards">' + delta_card("mIoU (dataset)", ev_a.miou, ev_b.miou) + delta_card(
        "mean image mIoU", ev_a.mean_image_miou, ev_b.mean_image_miou) + delta_card(
        "pixel accuracy", ev_a.pixel_acc, ev_b.pixel_acc, _pct, True)
    if ev_a.flip and ev_b.flip:
        cards += delta_card("flip consistency", ev_a.flip.score, ev_b.flip.score, _pct, True)
    n_better = sum(1 for d, _ in deltas if d > 0)
    cards += _card("images better / worse", f'<span class="pos">{n_better}</span> / '
                   f'<span class="neg">{sum(1 for d, _ in deltas if d < 0)}</span>', f"of {len(common)} in both") + "</div>"
    crow = []
    for i, n in enumerate(cls):
        d = ev_b.iou[i] - ev_a.iou[i]
        crow.append(f"<tr><td class=c>{_swatch(palette[i])}{_e(n)}</td><td class=n>{_f(ev_a.iou[i])}</td>"
                    f"<td class=n>{_f(ev_b.iou[i])}</td><td class='n {_delta_class(d)}'>{_signed(d)}</td></tr>")
    d_m = ev_b.miou - ev_a.miou
    crow.append(f"<tr><td><b>mean</b></td><td class=n><b>{_f(ev_a.miou)}</b></td><td class=n><b>{_f(ev_b.miou)}</b></td>"
                f"<td class='n {_delta_class(d_m)}'>{_signed(d_m)}</td></tr>")
    class_table = (f"<table><thead><tr><th>class</th><th class=n>{_e(na)}</th><th class=n>{_e(nb)}</th>"
                   f"<th class=n>Δ</th></tr></thead><tbody>{''.join(crow)}</tbody></table>")

    def gallery(items, word):
        if not items:
            return f'<p class="muted">No image got {word}.</p>'
        return "".join(
            f'<figure><a href="{_href(links[s])}"><img loading="lazy" src="{_href(links[s])}" alt="{_e(s)}"></a>'
            f"<figcaption><b>{_e(s)}</b> · image mIoU {_f(by_a[s].miou)} → {_f(by_b[s].miou)} "
            f'(<span class="{_delta_class(d)}">{_signed(d)}</span>)</figcaption></figure>' for d, s in items)

    flip_rows = ""
    if ev_a.flip or ev_b.flip:
        flip_rows = ('<section id="flip"><h2>Flip consistency</h2><div class="grid2">'
                     + f"<div><h3>{_e(na)}</h3>{_flip_html(ev_a)}</div><div><h3>{_e(nb)}</h3>{_flip_html(ev_b)}</div>"
                     + "</div></section>")
    subs = ""
    if sub:
        subs = ('<p class="lead">Full single reports: '
                + " · ".join(f'<a href="{_href(d)}/report.html">{_e(label)}</a>' for label, d in sub.items()) + "</p>")
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
    title = f"Comparison · {na} vs {nb}"
    info = {"images": str(len(common)), na: next(iter(ev_a.info.values()), ""),
            nb: next(iter(ev_b.info.values()), "")}
    for key in ("ground truth", "images", "dataset"):
        if key in ev_a.info and ev_a.info.get(key) == ev_b.info.get(key):
            info[key if key != "images" else "photos"] = ev_a.info[key]
    (out / "report.html").write_text(_page(title, f"mIoU {_f(ev_a.miou)} → {_f(ev_b.miou)} ({_signed(d_m)})",
                                           info, nav, body))

    # ---- markdown
    md = [f"# {title}", "", f"{len(common)} images.", "",
          _md_table(["", na, nb, "Δ"], [
              ["mIoU (dataset)", _f(ev_a.miou), _f(ev_b.miou), _signed(d_m)],
              ["mean image mIoU", _f(ev_a.mean_image_miou), _f(ev_b.mean_image_miou),
               _signed(ev_b.mean_image_miou - ev_a.mean_image_miou)],
              ["pixel accuracy", _pct(ev_a.pixel_acc, 2), _pct(ev_b.pixel_acc, 2),
               f"{100 * (ev_b.pixel_acc - ev_a.pixel_acc):+.2f} pp"],
              ["errors at boundaries", _pct(ev_a.regions.boundary_error_share), _pct(ev_b.regions.boundary_error_share), ""],
              ["flip consistency", _pct(ev_a.flip.score, 2) if ev_a.flip else "n/a",
               _pct(ev_b.flip.score, 2) if ev_b.flip else "n/a", ""],
              ["images better / worse", "", "", f"{n_better} / {sum(1 for d, _ in deltas if d < 0)}"]]),
          "", "## Per-class IoU", "", "![per-class IoU](img/iou_compare.png)", "",
          _md_table(["class", na, nb, "Δ"], [[n, _f(ev_a.iou[i]), _f(ev_b.iou[i]), _signed(ev_b.iou[i] - ev_a.iou[i])]
                                             for i, n in enumerate(cls)]),
          "", "## Biggest regressions", ""]
    md += [f"- **{s}** {_f(by_a[s].miou)} → {_f(by_b[s].miou)} ({_signed(d)}): ![{s}]({_href(links[s])})" for d, s in regress]
    md += ["", "## Biggest improvements", ""]
    md += [f"- **{s}** {_f(by_a[s].miou)} → {_f(by_b[s].miou)} ({_signed(d)}): ![{s}]({_href(links[s])})" for d, s in improve]
    if sub:
        md += ["", "Full reports: " + ", ".join(f"[{label}]({_href(d)}/report.md)" for label, d in sub.items())]
    (out / "report.md").write_text("\n".join(md) + "\n")
    (out / "summary.json").write_text(json.dumps(_jsonable({
        "names": list(names), "a": ev_a.summary(), "b": ev_b.summary(),
        "delta_miou": d_m, "per_class_delta": {n: ev_b.iou[i] - ev_a.iou[i] for i, n in enumerate(cls)},
        "regressions": [{"stem": s, "delta": d} for d, s in regress],
        "improvements": [{"stem": s, "delta": d} for d, s in improve]}), indent=1))
    return {"html": out / "report.html", "md": out / "report.md", "json": out / "summary.json"}


# ------------------------------------------------------------------------------------------- console

def _iou_style(v: float) -> str:
    if not math.isfinite(v):
        return "dim"
    return "green" if v >= 0.75 else "yellow" if v >= 0.5 else "red"


def print_summary(ev: Evaluation, console=None, out_dir: str | Path | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    palette = V.class_palette(ev.schema)
    t = Table(title=f"{ev.name}: per-class IoU", title_justify="left", show_edge=False, pad_edge=False)
    t.add_column("class")
    t.add_column("IoU", justify="right")
    t.add_column("", no_wrap=True)
    for i, n in enumerate(ev.schema.names):
        v = ev.iou[i]
        bar = "█" * int(round(20 * v)) if math.isfinite(v) else ""
        t.add_row(f"[{_hex(palette[i])}]■[/] {n}", f"[{_iou_style(v)}]{_f(v)}[/]", f"[{_hex(palette[i])}]{bar}[/]")
    console.print(t)
    flip = (f"{_pct(ev.flip.score, 2)} (parts {_pct(ev.flip.part_score, 2)})" if ev.flip else "n/a")
    tk = ev.kind_totals()
    wrong = max(tk[1:].sum(), 1)
    kinds = ", ".join(f"{E.ERROR_NAMES[k]} {_pct(tk[k] / wrong, 0)}" for k in E.ERROR_KINDS)
    console.print(f"[bold]mIoU {_f(ev.miou)}[/]  ·  mean image mIoU {_f(ev.mean_image_miou)}  ·  "
                  f"pixel acc {_pct(ev.pixel_acc, 2)}  ·  flip consistency {flip}")
    console.print(f"wrong pixels: {kinds}; {_pct(ev.regions.boundary_error_share, 0)} within "
                  f"{ev.boundary_px} px of an edge")
    worst = ", ".join(f"{r.stem} ({_f(r.miou, 2)})" for r in ev.worst(5))
    console.print(f"worst images: {worst}")
    for h in hints(ev)[:4]:
        console.print("  → " + re.sub(r"</?b>", "", h), style="dim", highlight=False)
    if out_dir is not None:
        console.print(f"report: [link=file://{Path(out_dir).resolve()}/report.html]{Path(out_dir) / 'report.html'}[/]")


def print_comparison(ev_a: Evaluation, ev_b: Evaluation, names: tuple[str, str], console=None,
                     out_dir: str | Path | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    na, nb = names
    t = Table(title=f"{na} vs {nb}: per-class IoU", title_justify="left", show_edge=False, pad_edge=False)
    for col, j in (("class", "left"), (na, "right"), (nb, "right"), ("Δ", "right")):
        t.add_column(col, justify=j)
    rows = list(enumerate(ev_a.schema.names)) + [(-1, "mean")]
    for i, n in rows:
        a, b = (ev_a.miou, ev_b.miou) if i < 0 else (ev_a.iou[i], ev_b.iou[i])
        d = b - a
        style = "green" if math.isfinite(d) and d > 5e-4 else "red" if math.isfinite(d) and d < -5e-4 else "dim"
        t.add_row(f"[bold]{n}[/]" if i < 0 else n, _f(a), _f(b), f"[{style}]{_signed(d)}[/]")
    console.print(t)
    if out_dir is not None:
        console.print(f"report: {Path(out_dir) / 'report.html'}")
