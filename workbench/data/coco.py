"""Import COCO instance annotations (polygons and RLE) as a workbench dataset.

::

    python -m workbench.coco --coco annotations.json --images DIR --out DATASET_DIR [--link]

writes ``DATASET_DIR/images/<file name>`` (copies, or symlinks with ``--link``),
``DATASET_DIR/masks/<stem>.png`` (single-channel uint8, pixel value = class value) and
``DATASET_DIR/classes.json`` (:meth:`ClassSchema.to_dict`).

Class values
    A category named like background (``_background_``, ``background``, ``__background__``, any case;
    or the one named by ``--background-category``) becomes value 0, named ``background``.
    If that category has the smallest id, every category gets ``value = id - background_id`` (the
    DSMLR convention: "category ids are value+1; id 1 is an unused ``_background_``"). Otherwise the
    ids are kept as values (``value = id``) and value 0 is background; if some non-background id is
    below 1 they are shifted so the smallest becomes 1. Values above 255 are an error (masks are 8 bit).

Rasterisation (reproduces the DSMLR masks pixel for pixel)
    The annotations of an image are painted largest first -- sorted by the ``area`` field, descending,
    ties by annotation id -- so small parts stay on top where instances overlap. Each polygon is
    filled with ``cv2.fillPoly`` (8-connected, no sub-pixel shift) after rounding its float vertices
    with ``np.round`` (round half to even; rounding half up, truncation or sub-pixel ``shift`` do
    *not* reproduce DSMLR). The polygons of one annotation are filled one by one (their union, as in
    pycocotools). RLE segmentations (uncompressed ``counts`` lists and compressed COCO strings,
    column-major) are decoded by :func:`decode_rle` and painted the same way.

Crowd annotations (``iscrowd`` true) are painted like the others by default: a crowd region is still
pixels of its class. ``--skip-crowd`` leaves them out (their pixels stay background unless another
instance covers them).

Problems: an image listed in the COCO file but missing from ``--images`` is an error (or, with
``--skip-missing``, a warning and the image is left out); annotations for an unknown image id are
skipped with a warning naming them; annotations with an unknown category id are an error (dropping
them would silently turn labelled pixels into background). Sizes are bounded before anything is
allocated: an image above :data:`~workbench.core.limits.MAX_IMAGE_PIXELS`, an RLE whose ``size`` is not
its image's, and a polygon vertex more than :data:`POLYGON_MARGIN` pixels outside its image are errors
naming the image or annotation.

The import is atomic: everything is written into a hidden ``.<OUT>.tmp<pid>`` folder beside ``OUT``
and moved into place only when complete, so a failure or Ctrl-C half way leaves no partial dataset
(and a killed import's leftover folder is removed by the next import).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..core.atomic import atomic_write, remove_stale_temporaries, temporary_name
from ..core.cli import ArgumentParser, fail_cleanly
from ..core.console import listing
from ..core.limits import MAX_IMAGE_PIXELS
from ..core.schema import SCHEMA_FILE, ClassSchema
from ..exceptions import CocoError
from .imageio import displayed_size, write_mask

BACKGROUND_NAMES = {"background", "_background_", "__background__"}
POLYGON_MARGIN = 16  # px a polygon vertex may lie outside its image (DSMLR's lie up to 1.8 px outside)


# --------------------------------------------------------------------------------------------- io


def load_coco(path: str | Path) -> dict:
    """Read a COCO annotation file and check its top-level structure.

    Returns the parsed dict with ``images``, ``categories`` and ``annotations`` lists (a missing
    ``annotations`` key is treated as an empty list).
    """
    path = Path(path)
    try:
        coco = json.loads(path.read_text())
    except OSError as err:
        raise CocoError(f"{path}: cannot read COCO file: {err}") from err
    except json.JSONDecodeError as err:
        raise CocoError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(coco, dict):
        raise CocoError(f"{path}: expected a JSON object with 'images', 'categories', 'annotations'")
    coco.setdefault("annotations", [])
    for key in ("images", "categories", "annotations"):
        if not isinstance(coco.get(key), list):
            raise CocoError(f"{path}: '{key}' must be a list"
                            + ("" if key in coco else " (key missing)"))
    return coco


# ---------------------------------------------------------------------------------------- classes


def _is_background(name: str) -> bool:
    return name.strip().lower() in BACKGROUND_NAMES


def category_values(categories: list[dict], background_category: str | None = None) -> dict[int, int]:
    """Map category id -> mask value (see the module docstring for the rule).

    ``background_category`` names the category to treat as background; by default a category named
    ``background``/``_background_``/``__background__`` (any case) is, if present.
    """
    ids, names = [], []
    for c in categories:
        try:
            ids.append(int(c["id"]))
            names.append(str(c["name"]))
        except (KeyError, TypeError, ValueError) as err:
            raise CocoError(f"category {c!r} needs an integer 'id' and a 'name'") from err
    dup_ids = sorted({i for i in ids if ids.count(i) > 1})
    if dup_ids:
        raise CocoError(f"duplicate category ids: {dup_ids}")
    dup_names = sorted({n for n in names if names.count(n) > 1})
    if dup_names:
        raise CocoError(f"duplicate category names: {dup_names}")
    if not ids:
        raise CocoError("the COCO file has no categories")

    if background_category is not None:
        bg = [i for i, n in zip(ids, names) if n == background_category]
        if not bg:
            raise CocoError(f"--background-category {background_category!r} is not a category; "
                            f"categories are {names}")
    else:
        bg = [i for i, n in zip(ids, names) if _is_background(n)]
        if len(bg) > 1:
            raise CocoError(f"several background-like categories {[n for n in names if _is_background(n)]}; "
                            "name the one to use with --background-category")

    if bg and bg[0] == min(ids):
        values = {i: i - bg[0] for i in ids}
    else:
        others = [i for i in ids if i not in bg]
        shift = 1 - min(others) if others and min(others) < 1 else 0
        values = {i: i + shift for i in others}
        if bg:
            values[bg[0]] = 0
    too_big = {n: values[i] for i, n in zip(ids, names) if values[i] > 255}
    if too_big:
        raise CocoError(f"class values must fit in an 8-bit mask (0..255) but categories get {too_big}; "
                        "renumber the category ids")
    return values


_SIDE_SWAP = {"left": "right", "right": "left", "Left": "Right", "Right": "Left",
              "LEFT": "RIGHT", "RIGHT": "LEFT"}


def _mirror_name(name: str) -> str:
    """``front_left_door`` -> ``front_right_door``; only whole words (split on ``_``, ``-``, space,
    ``.``) are swapped, so ``leftover`` stays as it is."""
    parts = re.split(r"([_\-\s.]+)", name)
    return "".join(_SIDE_SWAP.get(p, p) for p in parts)


def infer_hflip_pairs(names: list[str]) -> list[tuple[str, str]]:
    """(left, right) name pairs whose names differ only by the word left/right, in ``names`` order."""
    present = set(names)
    pairs = []
    for n in names:
        m = _mirror_name(n)
        if m != n and m in present and re.search(r"(?:^|[_\-\s.])(left|Left|LEFT)(?:$|[_\-\s.])", n):
            pairs.append((n, m))
    return pairs


def build_schema(categories: list[dict], values: dict[int, int]) -> ClassSchema:
    """Class schema: value 0 named ``background``, then every other category by value, with the
    left/right ``hflip_pairs`` inferred from the names."""
    by_value = sorted((values[int(c["id"])], str(c["name"])) for c in categories)
    cats = [(v, n) for v, n in by_value if v != 0]
    if any(n == "background" for _, n in cats):
        raise CocoError("a category named 'background' does not get value 0; name it with "
                        "--background-category or rename it")
    names = ["background"] + [n for _, n in cats]
    vals = [0] + [v for v, _ in cats]
    return ClassSchema(tuple(names), tuple(vals), tuple(infer_hflip_pairs(names)))


# ------------------------------------------------------------------------------------ rasterising


def decode_rle(rle: dict) -> np.ndarray:
    """Decode a COCO RLE (``{"size": [h, w], "counts": list | str}``) to an (h, w) uint8 0/1 mask.

    ``counts`` alternate runs of 0s and 1s (starting with 0s) over the image in column-major
    (Fortran) order. A string is the compressed form of pycocotools' ``rleToString``: each count is
    written in 5-bit groups, least significant first, as ``chr(48 + group)`` with bit 0x20 meaning
    "more groups follow" and bit 0x10 of the last group the sign; counts after the second are stored
    as the difference to the count two places before.
    """
    h, w = rle_size(rle)
    counts = rle_counts(rle)
    if (counts < 0).any() or counts.sum() != h * w:
        raise CocoError(f"RLE counts sum to {int(counts.sum())} (or are negative) for a {h}x{w} mask")
    vals = np.arange(len(counts)) % 2
    flat = np.repeat(vals.astype(np.uint8), counts)
    return flat.reshape((w, h)).T.copy()


def rle_size(rle: dict) -> tuple[int, int]:
    """(h, w) of an RLE, checked to be a size we may allocate (:class:`CocoError` otherwise)."""
    try:
        h, w = (int(x) for x in rle["size"])
    except (KeyError, TypeError, ValueError) as err:
        raise CocoError(f"RLE needs 'size': [h, w] and 'counts', got {_keys(rle)}") from err
    if h < 1 or w < 1 or h * w > MAX_IMAGE_PIXELS:
        raise CocoError(f"RLE size {h}x{w} (h x w) is not a usable mask size (at most "
                        f"{MAX_IMAGE_PIXELS / 1e6:,.0f} megapixels)")
    return h, w


def rle_counts(rle: dict) -> np.ndarray:
    """The run lengths of an RLE (compressed string or list), as int64."""
    counts = rle.get("counts") if isinstance(rle, dict) else None
    if isinstance(counts, (bytes, bytearray)):
        counts = counts.decode("ascii", errors="replace")
    if isinstance(counts, str):
        counts = _decode_rle_string(counts)
    try:
        return np.asarray(counts, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError, OverflowError) as err:
        raise CocoError(f"RLE 'counts' must be a list of integers or a compressed string, got {_keys(rle)}") from err


def _keys(rle) -> str:
    return f"keys {list(rle)}" if isinstance(rle, dict) else type(rle).__name__


def _decode_rle_string(s: str) -> list[int]:
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s):
                raise CocoError("truncated compressed RLE string")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise CocoError(f"invalid character {s[p]!r} in compressed RLE string")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _polygon_area(flat) -> float:
    pts = np.asarray(flat, dtype=np.float64).reshape(-1, 2)
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def annotation_area(ann: dict) -> float:
    """The annotation's ``area`` field, or (if absent) its polygon area / RLE pixel count."""
    if ann.get("area") is not None:
        try:
            return float(ann["area"])
        except (TypeError, ValueError) as err:
            raise CocoError(f"annotation {ann.get('id')}: 'area' must be a number, got {ann['area']!r}") from err
    seg = ann.get("segmentation")
    if isinstance(seg, dict):  # the pixel count is the sum of the runs of 1s: nothing to decode
        return float(rle_counts(seg)[1::2].sum())
    try:
        return sum(_polygon_area(p) for p in seg or [] if len(p) >= 6)
    except (TypeError, ValueError) as err:
        raise CocoError(f"annotation {ann.get('id')}: polygons must be flat lists of numbers") from err


def rasterize(annotations: list[dict], height: int, width: int, values: dict[int, int]) -> np.ndarray:
    """Paint the annotations of one image into an (height, width) uint8 mask of class values.

    Largest ``area`` first (ties by annotation id), so smaller instances end up on top; polygons are
    rounded with ``np.round`` and filled with ``cv2.fillPoly``; RLEs are decoded with
    :func:`decode_rle`. ``values`` maps category id -> class value.
    """
    mask = np.zeros((height, width), dtype=np.uint8)
    order = sorted(annotations, key=lambda a: (-annotation_area(a), a.get("id", 0)))
    for ann in order:
        try:
            value = values[int(ann["category_id"])]
        except (KeyError, TypeError, ValueError) as err:
            raise CocoError(f"annotation {ann.get('id')}: unknown category_id "
                            f"{ann.get('category_id')!r}") from err
        seg = ann.get("segmentation")
        if isinstance(seg, dict):
            try:
                size = [int(x) for x in seg.get("size", [])]
            except (TypeError, ValueError):
                size = seg.get("size")
            if size != [height, width]:
                raise CocoError(f"annotation {ann.get('id')}: RLE size {size} differs from its image "
                                f"{height}x{width} (h x w)")
            mask[decode_rle(seg).astype(bool)] = value
        elif isinstance(seg, list):
            for poly in seg:
                if not isinstance(poly, (list, tuple)) or len(poly) % 2:
                    raise CocoError(f"annotation {ann.get('id')}: a polygon must be a flat list "
                                    "[x1, y1, x2, y2, ...] of even length")
                if len(poly) < 6:        # fewer than 3 points: no area
                    continue
                pts = _polygon_points(ann, poly, height, width)
                cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], int(value))
        else:
            raise CocoError(f"annotation {ann.get('id')}: unsupported segmentation {type(seg).__name__}")
    return mask


def _polygon_points(ann: dict, poly, height: int, width: int) -> np.ndarray:
    """(n, 2) float vertices of a polygon, checked to be numbers within :data:`POLYGON_MARGIN` px of
    the ``height`` x ``width`` image."""
    try:
        pts = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError) as err:
        raise CocoError(f"annotation {ann.get('id')}: polygon coordinates must be numbers") from err
    m = POLYGON_MARGIN
    bad = ~np.isfinite(pts).all(1) | (pts[:, 0] < -m) | (pts[:, 0] > width + m) | (pts[:, 1] < -m) | (pts[:, 1] > height + m)
    if bad.any():
        x, y = pts[np.argmax(bad)]
        raise CocoError(f"annotation {ann.get('id')}: polygon vertex ({x:g}, {y:g}) lies outside its {width}x{height} "
                        f"image (more than {m} px)")
    return pts


# -------------------------------------------------------------------------------------- importing


@dataclass
class ImportReport:
    images: int = 0                      # images written
    annotations: int = 0                 # annotations painted
    empty: list[str] = field(default_factory=list)      # images without any annotation
    warnings: list[str] = field(default_factory=list)


def _as_int(x):
    try:
        return int(x)
    except (TypeError, ValueError):
        return x if isinstance(x, str) else repr(x)


def _find_image(images_dir: Path, file_name: str) -> Path | None:
    for cand in (images_dir / file_name, images_dir / Path(file_name).name):
        if cand.is_file():
            return cand
    return None


def import_coco(coco: str | Path | dict, images_dir: str | Path, out_dir: str | Path, *,
                link: bool = False, background_category: str | None = None,
                skip_missing: bool = False, skip_crowd: bool = False,
                log=None) -> ImportReport:
    """Write ``out_dir/images``, ``out_dir/masks`` and ``out_dir/classes.json`` from a COCO file.

    ``coco`` is a path or an already loaded dict. ``link`` symlinks the images instead of copying
    them. Raises :class:`CocoError` (before writing anything) for missing images (unless
    ``skip_missing``), unknown category ids, size mismatches, duplicate stems and a non-empty
    ``out_dir/images`` or ``out_dir/masks``. ``log`` receives warning lines (default: stderr).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    coco = load_coco(coco) if not isinstance(coco, dict) else coco
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise CocoError(f"{images_dir}: image folder not found")
    report = ImportReport()

    def warn(msg: str):
        report.warnings.append(msg)
        log(f"warning: {msg}")

    values = category_values(coco["categories"], background_category)
    schema = build_schema(coco["categories"], values)

    images = {}
    for im in coco["images"]:
        try:
            images[int(im["id"])] = (str(im["file_name"]), int(im["height"]), int(im["width"]))
        except (KeyError, TypeError, ValueError) as err:
            raise CocoError(f"image entry {str(im)[:200]} needs 'id', 'file_name', 'height', 'width'") from err
        _, h, w = images[int(im["id"])]
        if h < 1 or w < 1 or h * w > MAX_IMAGE_PIXELS:
            raise CocoError(f"image {im['file_name']}: {w}x{h} is not a usable image size (at most "
                            f"{MAX_IMAGE_PIXELS / 1e6:,.0f} megapixels)")

    by_image: dict[int, list[dict]] = {i: [] for i in images}
    orphans, unknown_cats, crowd = [], {}, 0
    for ann in coco["annotations"]:
        iid, cid = _as_int(ann.get("image_id")), _as_int(ann.get("category_id"))
        if iid not in by_image:
            orphans.append(f"{ann.get('id')} (image_id {iid})")
            continue
        if cid not in values:
            unknown_cats.setdefault(cid, []).append(str(ann.get("id")))
            continue
        if skip_crowd and ann.get("iscrowd"):
            crowd += 1
            continue
        by_image[iid].append(ann)
    if unknown_cats:
        raise CocoError("annotations with unknown category ids: " + "; ".join(
            f"category {c}: annotation(s) {listing(a)}" for c, a in unknown_cats.items())
            + f" (known ids: {sorted(values)})")
    if orphans:
        warn(f"skipped {len(orphans)} annotation(s) for image ids not in 'images': {listing(orphans)}")
    if crowd:
        warn(f"skipped {crowd} crowd annotation(s) (--skip-crowd)")

    # resolve and check every image before writing anything
    problems, missing, jobs, stems = [], [], [], {}
    for iid, (file_name, h, w) in images.items():
        src = _find_image(images_dir, file_name)
        if src is None:
            missing.append(file_name)
            continue
        name = Path(file_name).name
        stem = Path(name).stem
        if stem in stems:
            problems.append(f"{file_name}: same stem {stem!r} as {stems[stem]} (masks/{stem}.png would clash)")
            continue
        stems[stem] = file_name
        size = displayed_size(src)
        if size is None:
            problems.append(f"{src}: unreadable or not an image")
        elif size != (w, h):
            problems.append(f"{src}: is {size[0]}x{size[1]} but the COCO file says {w}x{h}")
        jobs.append((iid, src, name, stem, h, w))
    if missing:
        msg = f"{len(missing)} image(s) listed in the COCO file are missing from {images_dir}: {listing(missing)}"
        if skip_missing:
            warn(msg + " (skipped)")
        else:
            problems.insert(0, msg + " (use --skip-missing to leave them out)")
    for sub in ("images", "masks"):
        d = out_dir / sub
        if d.is_dir() and any(d.iterdir()):
            problems.append(f"{d}: already has files; import into a new or empty dataset folder")
    if problems:
        raise CocoError("cannot import:\n  - " + "\n  - ".join(problems))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir.parent)
    stage = temporary_name(out_dir)
    shutil.rmtree(stage, ignore_errors=True)
    try:
        (stage / "images").mkdir(parents=True)
        (stage / "masks").mkdir()
        for iid, src, name, stem, h, w in jobs:
            anns = by_image[iid]
            write_mask(stage / "masks" / f"{stem}.png", rasterize(anns, h, w, values))
            dst = stage / "images" / name
            if link:
                os.symlink(src.resolve(), dst)
            else:
                shutil.copy2(src, dst)
            report.images += 1
            report.annotations += len(anns)
            if not anns:
                report.empty.append(name)
        atomic_write(stage / SCHEMA_FILE, json.dumps(schema.to_dict(), indent=2) + "\n")
        _move_into_place(stage, out_dir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if report.empty:
        warn(f"{len(report.empty)} image(s) have no annotations (all-background masks): "
             f"{listing(report.empty)}")
    return report


def _move_into_place(stage: Path, out_dir: Path) -> None:
    """Rename the complete import ``stage`` to ``out_dir``: in one step when ``out_dir`` does not
    exist; otherwise (its images/ and masks/ are empty or absent) classes.json first, then masks/,
    then images/, so that an interruption in between leaves a folder that fails validation instead of
    a dataset with the wrong schema or missing files."""
    if not out_dir.exists():
        os.replace(stage, out_dir)
        return
    for name in (SCHEMA_FILE, "masks", "images"):
        target = out_dir / name
        if target.is_dir():
            target.rmdir()  # checked empty before the import started
        os.replace(stage / name, target)


@fail_cleanly
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m workbench.coco",
        description="Turn COCO polygon/RLE annotations and an image folder into a workbench dataset: "
                    "OUT/images/<file name>, OUT/masks/<stem>.png (pixel value = class value) and "
                    "OUT/classes.json. A category named background/_background_ gets value 0; if it "
                    "has the smallest id, value = id - its id, otherwise value = id. Masks paint the "
                    "largest instance first so small parts stay on top.")
    parser.add_argument("--coco", required=True, help="COCO annotation JSON file")
    parser.add_argument("--images", required=True, help="folder with the images named by file_name")
    parser.add_argument("--out", required=True, help="dataset folder to create (images/, masks/ must be empty)")
    parser.add_argument("--background-category", metavar="NAME",
                        help="category to treat as background (value 0); default: one named "
                             "background/_background_/__background__ if present")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--copy", dest="link", action="store_false", help="copy the images (default)")
    how.add_argument("--link", dest="link", action="store_true", help="symlink the images instead of copying")
    parser.set_defaults(link=False)
    parser.add_argument("--skip-missing", action="store_true",
                        help="leave out images missing from --images (default: error)")
    parser.add_argument("--skip-crowd", action="store_true",
                        help="do not paint iscrowd annotations (default: paint them like the others)")
    args = parser.parse_args(argv)
    rep = import_coco(args.coco, args.images, args.out, link=args.link, background_category=args.background_category,
                      skip_missing=args.skip_missing, skip_crowd=args.skip_crowd)
    print(f"wrote {rep.images} image(s), {rep.annotations} annotation(s) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
