"""Pictures of segmentations: a palette per schema, colour overlays, error maps, legends and the
panels (tiles side by side with captions and a legend) that the analysis reports are made of.

Pure numpy / OpenCV / Pillow; no matplotlib (charts live in :mod:`workbench.reports.charts`).
All images are RGB uint8 arrays of shape (H, W, 3); label maps are class *indices* (255 = ignored).
"""

from __future__ import annotations

import colorsys
import importlib.util
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..core.schema import ClassSchema
from ..data.resize import resize_labels, resize_rgb
from ..evaluation import error_kinds as E
from ..evaluation.metrics import confusion_matrix, mean_iou

PANEL_BG = (24, 26, 31)
PANEL_FG = (236, 238, 242)
PANEL_MUTED = (150, 156, 168)
TILE_BG = (44, 47, 54)
BACKGROUND_COLOUR = (58, 62, 70)   # legend swatch of the background class (never painted)
IGNORE_COLOUR = (90, 90, 90)

# Change map of a comparison (A -> B)
FIXED, BROKEN, BOTH_WRONG = 1, 2, 3
CHANGE_NAMES = {FIXED: "fixed by B", BROKEN: "broken by B", BOTH_WRONG: "wrong in both"}
CHANGE_COLOURS = {FIXED: (64, 214, 110), BROKEN: (255, 92, 64), BOTH_WRONG: (170, 172, 184)}


# --------------------------------------------------------------------------------------------- palette

# Left/right pairs: (family, light, deep) in the spirit of ColorBrewer "Paired".
PAIR_COLOURS = (
    ("blue", (110, 190, 255), (25, 95, 215)),
    ("green", (150, 235, 110), (30, 150, 45)),
    ("red", (255, 135, 125), (205, 20, 35)),
    ("orange", (255, 205, 95), (240, 115, 0)),
    ("purple", (205, 160, 255), (120, 55, 195)),
    ("teal", (110, 235, 215), (0, 140, 130)),
    ("pink", (255, 155, 222), (200, 20, 140)),
    ("brown", (230, 190, 110), (150, 90, 20)),
)
# Single classes, most distinct first (after Trubetskoy's 20 distinct colours); a single colour is
# skipped when its family is already taken by a pair, so no part looks like half of a pair.
SINGLE_COLOURS = (
    ("yellow", (255, 225, 25)), ("cyan", (70, 240, 240)), ("magenta", (240, 50, 230)),
    ("red", (230, 25, 75)), ("green", (60, 180, 75)), ("blue", (0, 130, 200)),
    ("orange", (245, 130, 48)), ("purple", (145, 30, 180)), ("brown", (170, 110, 40)),
    ("teal", (0, 128, 128)), ("olive", (128, 128, 0)), ("white", (245, 245, 245)),
    ("lime", (200, 255, 0)), ("beige", (255, 250, 200)), ("red", (128, 0, 0)),
    ("blue", (0, 0, 128)), ("pink", (250, 190, 212)), ("green", (170, 255, 195)),
    ("orange", (255, 215, 180)), ("purple", (220, 190, 255)),
)


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def class_palette(schema: ClassSchema) -> np.ndarray:
    """(C, 3) uint8 RGB colour per class index, deterministic for a schema.

    The two classes of a left/right (flip) pair share a hue family - the left one light, the right
    one deep - so a left/right swap reads as "same part, other side" at a glance. Other parts get
    distinct colours from families no pair uses. The background class gets a neutral dark grey (it
    is never painted over the image). Beyond the curated lists, hues follow the golden ratio.
    """
    bg = E.background_index(schema)
    index = {n: i for i, n in enumerate(schema.names)}
    partner = {}
    for a, b in schema.hflip_pairs:
        partner[index[a]], partner[index[b]] = index[b], index[a]
    pairs: list[tuple[int, int]] = []
    singles: list[int] = []
    for i in range(schema.num_classes):
        if i == bg or (i in partner and any(i in p for p in pairs)):
            continue
        if i in partner:
            j = partner[i]
            left_first = "left" in schema.names[i].lower() or "right" in schema.names[j].lower()
            pairs.append((i, j) if left_first else (j, i))
        else:
            singles.append(i)
    palette = np.zeros((schema.num_classes, 3), dtype=np.uint8)
    palette[bg] = BACKGROUND_COLOUR
    used = set()
    extra = 0

    def generated(light: bool | None):
        nonlocal extra
        h = (0.11 + 0.618034 * extra) % 1.0
        extra += 1
        return _hsv(h, 0.4 if light else 0.9 if light is False else 0.7, 1.0 if light else 0.75 if light is False else 0.92)

    for k, (left, right) in enumerate(pairs):
        if k < len(PAIR_COLOURS):
            family, light, deep = PAIR_COLOURS[k]
            used.add(family)
            palette[left], palette[right] = light, deep
        else:
            palette[left] = generated(True)
            extra -= 1
            palette[right] = generated(False)
    pool = [c for f, c in SINGLE_COLOURS if f not in used]
    for k, i in enumerate(singles):
        palette[i] = pool[k] if k < len(pool) else generated(None)
    return palette


# ----------------------------------------------------------------------------------------------- fonts

_FONT_FILES = {
    False: ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    True: ("DejaVuSans-Bold.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"),
}


@lru_cache(maxsize=32)
def font(size: int, bold: bool = False) -> ImageFont.ImageFont:
    """DejaVu Sans (system or matplotlib's copy), else Pillow's built-in scalable font."""
    name, system = _FONT_FILES[bold]
    candidates = [Path(system)]
    spec = importlib.util.find_spec("matplotlib")
    if spec and spec.submodule_search_locations:
        candidates.append(Path(list(spec.submodule_search_locations)[0]) / "mpl-data" / "fonts" / "ttf" / name)
    for path in candidates:
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, f) -> int:
    x0, _, x1, _ = draw.textbbox((0, 0), text, font=f)
    return x1 - x0


# -------------------------------------------------------------------------------------------- drawing

def blank_image(shape: tuple[int, int]) -> np.ndarray:
    """Neutral stand-in when no photo is available."""
    return np.full((*shape, 3), 118, dtype=np.uint8)


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Colour-coded label map; indices outside the palette (ignored) are grey."""
    lut = np.tile(np.asarray(IGNORE_COLOUR, dtype=np.uint8), (256, 1))
    lut[: len(palette)] = palette
    return lut[labels]


def _blend(base: np.ndarray, colour: np.ndarray, where: np.ndarray, alpha: float) -> None:
    base[where] = (base[where].astype(np.float32) * (1 - alpha) + colour[where].astype(np.float32) * alpha
                   ).astype(np.uint8)


def overlay_labels(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, background: int,
                   alpha: float = 0.66, outline: bool = True) -> np.ndarray:
    """The photo with every part painted in its class colour and outlined; background dimmed."""
    out = (image.astype(np.float32) * 0.62).astype(np.uint8)
    colours = colorize(labels, palette)
    part = labels != background
    _blend(out, colours, part, alpha)
    if outline:
        edge = E.edge_map(labels) & part
        out[edge] = (0.35 * colours[edge] + 0.65 * 255).astype(np.uint8)
    return out


def render_errors(image: np.ndarray, kinds: np.ndarray, gt: np.ndarray | None = None,
                  background: int | None = None) -> np.ndarray:
    """Error map: a dim grey photo with each error kind in its colour. Given the ground truth, its
    class edges are traced faintly and correctly predicted part pixels tinted green, for context."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    out = np.repeat((grey * 0.38 + 18)[..., None], 3, axis=2).astype(np.uint8)
    lut = np.zeros((256, 3), dtype=np.uint8)
    for k, c in E.ERROR_COLOURS.items():
        lut[k] = c
    colours = lut[kinds]
    if gt is not None:
        _blend(out, np.full_like(out, 255), E.edge_map(gt), 0.22)
        if background is not None:
            _blend(out, colours, (kinds == E.CORRECT) & (gt != background), 0.45)
    _blend(out, colours, np.isin(kinds, E.ERROR_KINDS), 0.92)
    _blend(out, colours, kinds == E.IGNORED, 0.6)
    return out


def render_change(image: np.ndarray, change: np.ndarray) -> np.ndarray:
    """Change map of a comparison: where B fixed (green) or broke (red) A's prediction."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    out = np.repeat((grey * 0.38 + 18)[..., None], 3, axis=2).astype(np.uint8)
    lut = np.zeros((256, 3), dtype=np.uint8)
    for k, c in CHANGE_COLOURS.items():
        lut[k] = c
    colours = lut[change]
    _blend(out, colours, change == BOTH_WRONG, 0.45)
    _blend(out, colours, (change == FIXED) | (change == BROKEN), 0.92)
    return out


def change_map(gt: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, num_classes: int) -> np.ndarray:
    valid = gt < num_classes
    ok_a, ok_b = (pred_a == gt) & valid, (pred_b == gt) & valid
    change = np.zeros(gt.shape, dtype=np.uint8)
    change[~ok_a & ok_b & valid] = FIXED
    change[ok_a & ~ok_b & valid] = BROKEN
    change[~ok_a & ~ok_b & valid] = BOTH_WRONG
    return change


# ------------------------------------------------------------------------------------------- legends

def legend(items: list[tuple[tuple[int, int, int], str]], width: int, size: int = 15,
           title: str | None = None, min_col: int = 170) -> np.ndarray:
    """A legend strip ``width`` px wide: colour swatch + label per item, in as many columns as fit."""
    f, fb = font(size), font(size, bold=True)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    sw = size + 2
    pad, gap = 12, 8
    col_w = max([min_col] + [sw + gap + _text_width(probe, t, f) + 22 for _, t in items])
    x0 = pad + (_text_width(probe, title, fb) + 18 if title else 0)
    ncol = max(1, (width - x0 - pad) // col_w)
    nrow = max(1, -(-len(items) // ncol))
    row_h = size + 10
    img = Image.new("RGB", (width, pad * 2 + nrow * row_h - 6), PANEL_BG)
    d = ImageDraw.Draw(img)
    if title:
        d.text((pad, pad), title, font=fb, fill=PANEL_MUTED)
    for n, (colour, text) in enumerate(items):
        r, c = divmod(n, ncol)
        x, y = x0 + c * col_w, pad + r * row_h
        d.rounded_rectangle((x, y, x + sw, y + sw - 2), radius=4, fill=tuple(int(v) for v in colour),
                            outline=(255, 255, 255) if sum(colour) < 200 else None)
        d.text((x + sw + gap, y - 1), text, font=f, fill=PANEL_FG)
    return np.asarray(img)


def class_legend_items(schema: ClassSchema, palette: np.ndarray, present: np.ndarray | None = None):
    """(colour, name) of the classes in ``present`` (indices), or all classes."""
    idx = range(schema.num_classes) if present is None else sorted(int(i) for i in present if i < schema.num_classes)
    return [(tuple(int(v) for v in palette[i]), schema.names[i]) for i in idx]


def error_legend_items(shares: dict[int, float] | None = None):
    items = []
    for k in E.ERROR_KINDS:
        label = E.ERROR_NAMES[k]
        if shares is not None:
            label += f"  {100 * shares.get(k, 0.0):.1f}%"
        items.append((E.ERROR_COLOURS[k], label))
    return items


# -------------------------------------------------------------------------------------------- panels

def fit_tile(image: np.ndarray, tile: int, nearest: bool = False) -> np.ndarray:
    """Scale ``image`` to fit a ``tile`` x ``tile`` square (aspect kept), centred on the tile colour."""
    h, w = image.shape[:2]
    s = tile / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    small = resize_labels(image, (nh, nw)) if nearest else resize_rgb(image, (nh, nw))
    out = np.empty((tile, tile, 3), dtype=np.uint8)
    out[:] = TILE_BG
    y, x = (tile - nh) // 2, (tile - nw) // 2
    out[y:y + nh, x:x + nw] = small
    return out


def tile_size(shape: tuple[int, int], tile: int) -> tuple[int, int]:
    h, w = shape
    s = tile / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def compose_panel(tiles: list[tuple[str, np.ndarray]], title: str, subtitle: str = "",
                  legends: list[np.ndarray] = (), columns: int | None = None) -> np.ndarray:
    """Tiles (all the same size) in a grid under a title bar, with caption per tile and legend strips
    below. Returns the RGB panel."""
    th, tw = tiles[0][1].shape[:2]
    columns = columns or len(tiles)
    rows = -(-len(tiles) // columns)
    gap, margin, cap_h, title_h = 8, 12, 28, 46
    width = margin * 2 + columns * tw + (columns - 1) * gap
    grid_h = rows * (cap_h + th) + (rows - 1) * gap
    legends = [lg for lg in legends if lg is not None]
    height = title_h + grid_h + sum(lg.shape[0] for lg in legends) + margin
    img = Image.new("RGB", (width, height), PANEL_BG)
    d = ImageDraw.Draw(img)
    d.text((margin, 12), title, font=font(20, bold=True), fill=PANEL_FG)
    if subtitle:
        x = margin + _text_width(d, title, font(20, bold=True)) + 16
        d.text((x, 16), subtitle, font=font(16), fill=PANEL_MUTED)
    for n, (caption, tile) in enumerate(tiles):
        r, c = divmod(n, columns)
        x = margin + c * (tw + gap)
        y = title_h + r * (cap_h + th + gap)
        d.text((x + 2, y + 4), caption, font=font(15, bold=True), fill=PANEL_MUTED)
        img.paste(Image.fromarray(tile), (x, y + cap_h))
    y = title_h + grid_h
    for lg in legends:
        # legends are full-width strips drawn at panel width
        strip = lg if lg.shape[1] == width else resize_rgb(lg, (lg.shape[0], width))
        img.paste(Image.fromarray(strip), (0, y))
        y += lg.shape[0]
    return np.asarray(img)


def _prepare(image, gt, shape, tile):
    """Photo at the ground truth's size (grey stand-in if missing) and the tile geometry."""
    if image is None:
        image = blank_image(shape)
    elif image.shape[:2] != shape:
        image = resize_rgb(image, shape)
    return image, tile_size(shape, tile)


def image_miou(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    return mean_iou(confusion_matrix(gt, pred, num_classes))


def error_panel(image: np.ndarray | None, gt: np.ndarray, pred: np.ndarray, schema: ClassSchema,
                title: str = "", subtitle: str | None = None, tile: int = 384) -> np.ndarray:
    """The standard error-map panel: image | ground truth | prediction | errors, with a legend of the
    classes present and the error kinds (share of scored pixels in each)."""
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        pred = resize_labels(pred.astype(np.uint8), gt.shape)
    image, small = _prepare(image, gt, gt.shape, tile)
    palette = class_palette(schema)
    bg = E.background_index(schema)
    kinds = E.classify_errors(gt, pred, schema)
    shares = E.error_kind_shares(kinds)
    if subtitle is None:
        acc = shares[E.CORRECT]
        subtitle = f"image mIoU {image_miou(gt, pred, schema.num_classes):.3f}   ·   pixel accuracy {acc:.3f}"
    img_s = resize_rgb(image, small)
    gt_s, pred_s, kinds_s = (resize_labels(a.astype(np.uint8), small) for a in (gt, pred, kinds))
    tiles = [
        ("Image", fit_tile(img_s, tile)),
        ("Ground truth", fit_tile(overlay_labels(img_s, gt_s, palette, bg), tile)),
        ("Prediction", fit_tile(overlay_labels(img_s, pred_s, palette, bg), tile)),
        ("Errors", fit_tile(render_errors(img_s, kinds_s, gt_s, bg), tile)),
    ]
    width = 4 * tile + 3 * 8 + 24
    present = np.union1d(np.unique(gt), np.unique(pred))
    legends = [legend(class_legend_items(schema, palette, present), width, title="classes"),
               legend(error_legend_items(shares), width, title="errors", min_col=240)]
    return compose_panel(tiles, title, subtitle, legends)


def comparison_panel(image: np.ndarray | None, gt: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray,
                     schema: ClassSchema, names: tuple[str, str] = ("A", "B"), title: str = "",
                     tile: int = 320) -> np.ndarray:
    """Two rows: image | A prediction | A errors | changes A->B ; ground truth | B prediction | B errors
    | scores."""
    gt = np.asarray(gt)
    pred_a = resize_labels(np.asarray(pred_a, dtype=np.uint8), gt.shape)
    pred_b = resize_labels(np.asarray(pred_b, dtype=np.uint8), gt.shape)
    image, small = _prepare(image, gt, gt.shape, tile)
    palette = class_palette(schema)
    bg = E.background_index(schema)
    c = schema.num_classes
    kinds_a = E.classify_errors(gt, pred_a, schema)
    kinds_b = E.classify_errors(gt, pred_b, schema)
    change = change_map(gt, pred_a, pred_b, c)
    img_s = resize_rgb(image, small)
    gt_s, pa_s, pb_s, ka_s, kb_s, ch_s = (resize_labels(a.astype(np.uint8), small)
                                          for a in (gt, pred_a, pred_b, kinds_a, kinds_b, change))
    m_a, m_b = image_miou(gt, pred_a, c), image_miou(gt, pred_b, c)
    scores = _score_tile(tile, names, m_a, m_b, change)
    na, nb = names
    tiles = [
        ("Image", fit_tile(img_s, tile)),
        (f"{na}: prediction", fit_tile(overlay_labels(img_s, pa_s, palette, bg), tile)),
        (f"{na}: errors", fit_tile(render_errors(img_s, ka_s, gt_s, bg), tile)),
        (f"Changes {na} → {nb}", fit_tile(render_change(img_s, ch_s), tile)),
        ("Ground truth", fit_tile(overlay_labels(img_s, gt_s, palette, bg), tile)),
        (f"{nb}: prediction", fit_tile(overlay_labels(img_s, pb_s, palette, bg), tile)),
        (f"{nb}: errors", fit_tile(render_errors(img_s, kb_s, gt_s, bg), tile)),
        ("Scores", scores),
    ]
    width = 4 * tile + 3 * 8 + 24
    present = np.union1d(np.union1d(np.unique(gt), np.unique(pred_a)), np.unique(pred_b))
    change_items = [(CHANGE_COLOURS[k], CHANGE_NAMES[k].replace(" B", f" {nb}")) for k in (FIXED, BROKEN, BOTH_WRONG)]
    legends = [legend(class_legend_items(schema, palette, present), width, title="classes"),
               legend(error_legend_items(), width, title="errors", min_col=200),
               legend(change_items, width, title="changes", min_col=200)]
    subtitle = f"image mIoU {na} {m_a:.3f}  →  {nb} {m_b:.3f}   ({m_b - m_a:+.3f})"
    return compose_panel(tiles, title, subtitle, legends, columns=4)


def _score_tile(tile: int, names: tuple[str, str], m_a: float, m_b: float, change: np.ndarray) -> np.ndarray:
    img = Image.new("RGB", (tile, tile), TILE_BG)
    d = ImageDraw.Draw(img)
    big, small = font(max(18, tile // 9), bold=True), font(max(12, tile // 22))
    fixed, broken = int((change == FIXED).sum()), int((change == BROKEN).sum())
    delta = m_b - m_a
    y = tile // 10
    for name, m in zip(names, (m_a, m_b)):
        d.text((18, y), f"{name}", font=small, fill=PANEL_MUTED)
        d.text((18, y + tile // 20 + 4), f"{m:.3f}", font=big, fill=PANEL_FG)
        y += tile // 4
    colour = CHANGE_COLOURS[FIXED] if delta > 0 else CHANGE_COLOURS[BROKEN] if delta < 0 else PANEL_FG
    d.text((18, y), "Δ image mIoU", font=small, fill=PANEL_MUTED)
    d.text((18, y + tile // 20 + 4), f"{delta:+.3f}", font=big, fill=colour)
    y += tile // 4
    d.text((18, y), f"pixels fixed {fixed:,}  ·  broken {broken:,}", font=small, fill=PANEL_MUTED)
    return np.asarray(img)


def save_png(path: str | Path, rgb: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 6]):
        raise OSError(f"cannot write {path}")
    return path
