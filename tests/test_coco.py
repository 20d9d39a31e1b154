"""COCO importer: DSMLR reproduction, polygon/RLE rasterising, class values, error cases."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from workbench.data.coco import (CocoError, category_values, decode_rle, import_coco, infer_hflip_pairs,
                            main, rasterize)
from workbench.core.schema import load_schema
from workbench.data.dataset import load_dataset

DSMLR = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "dsmlr-carparts"


# ----------------------------------------------------------------------------- helpers (test-only)

def rle_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO counts of a 0/1 mask (column-major, starting with a run of 0s)."""
    flat = mask.T.reshape(-1).astype(np.uint8)
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    return counts


def rle_string(counts: list[int]) -> str:
    """pycocotools' rleToString, ported from maskApi.c."""
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


H, W = 12, 10     # non-square on purpose: RLE is column-major


def synthetic(tmp_path: Path):
    """Two images; a.jpg has a polygon (hood), a compressed RLE (door) and an uncompressed RLE
    (mirror) that overlap; b.jpg has no annotations. Returns (coco dict, images dir, expected masks)."""
    img_dir = tmp_path / "src"
    img_dir.mkdir()
    for name in ("a.jpg", "b.jpg"):
        cv2.imwrite(str(img_dir / name), np.full((H, W, 3), 128, np.uint8))
    door = np.zeros((H, W), np.uint8)
    door[6:11, 3:8] = 1
    mirror = np.zeros((H, W), np.uint8)
    mirror[5:7, 5:7] = 1
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": H, "width": W},
                   {"id": 2, "file_name": "sub/b.jpg", "height": H, "width": W}],
        "categories": [{"id": 1, "name": "_background_"}, {"id": 2, "name": "front_left_door"},
                       {"id": 3, "name": "front_right_door"}, {"id": 4, "name": "left_mirror"},
                       {"id": 5, "name": "right_mirror"}, {"id": 6, "name": "hood"},
                       {"id": 7, "name": "leftover"}],
        "annotations": [   # smallest first in the file: painting order must come from the areas
            {"id": 10, "image_id": 1, "category_id": 4, "area": 4, "iscrowd": 0,
             "segmentation": {"size": [H, W], "counts": rle_counts(mirror)}},
            {"id": 11, "image_id": 1, "category_id": 2, "area": 25, "iscrowd": 1,
             "segmentation": {"size": [H, W], "counts": rle_string(rle_counts(door))}},
            # no area field: computed from the polygon (64); .5 vertices round half to even -> 0 and 8
            {"id": 12, "image_id": 1, "category_id": 6, "iscrowd": 0,
             "segmentation": [[0.5, 0.5, 8.5, 0.5, 8.5, 8.5, 0.5, 8.5]]},
        ],
    }
    a = np.zeros((H, W), np.uint8)
    a[0:9, 0:9] = 5          # hood, value 6 - 1
    a[door == 1] = 1         # front_left_door on top of the hood
    a[mirror == 1] = 3       # left_mirror on top of both
    return coco, img_dir, {"a": a, "b": np.zeros((H, W), np.uint8)}


# ------------------------------------------------------------------------------------------- DSMLR

@pytest.mark.skipif(not (DSMLR / "annotations_coco.json").exists(), reason="shared DSMLR data set absent")
def test_reproduces_dsmlr_masks_and_schema(tmp_path):
    out = tmp_path / "dsmlr"
    rep = import_coco(DSMLR / "annotations_coco.json", DSMLR / "images", out, link=True, log=lambda m: None)
    gt_files = sorted((DSMLR / "masks").glob("*.png"))
    assert rep.images == len(gt_files) == 400
    bad = [p.name for p in gt_files
           if not np.array_equal(cv2.imread(str(p), cv2.IMREAD_UNCHANGED),
                                 cv2.imread(str(out / "masks" / p.name), cv2.IMREAD_UNCHANGED))]
    assert bad == [], f"{len(bad)} masks differ, e.g. {bad[:5]}"
    assert (out / "images" / "train1.jpg").is_symlink()
    mine, ref = json.loads((out / "classes.json").read_text()), json.loads((DSMLR / "classes.json").read_text())
    assert mine["classes"] == ref["classes"]
    assert sorted(map(tuple, mine["hflip_pairs"])) == sorted(map(tuple, ref["hflip_pairs"]))


# --------------------------------------------------------------------------------------- synthetic

def test_synthetic_import(tmp_path):
    coco, img_dir, expected = synthetic(tmp_path)
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    out = tmp_path / "ds"
    assert main(["--coco", str(tmp_path / "ann.json"), "--images", str(img_dir), "--out", str(out)]) == 0
    for stem, exp in expected.items():
        got = cv2.imread(str(out / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert got.dtype == np.uint8 and got.ndim == 2
        np.testing.assert_array_equal(got, exp, err_msg=stem)
    assert (out / "images" / "a.jpg").is_file() and not (out / "images" / "a.jpg").is_symlink()
    assert (out / "images" / "b.jpg").is_file()       # file_name "sub/b.jpg" found by its base name
    d = json.loads((out / "classes.json").read_text())
    assert d == {
        "classes": [{"name": "background", "value": 0}, {"name": "front_left_door", "value": 1},
                    {"name": "front_right_door", "value": 2}, {"name": "left_mirror", "value": 3},
                    {"name": "right_mirror", "value": 4}, {"name": "hood", "value": 5},
                    {"name": "leftover", "value": 6}],
        "hflip_pairs": [["front_left_door", "front_right_door"], ["left_mirror", "right_mirror"]],
    }
    ds = load_dataset(out, 8)                          # the workbench accepts what we wrote
    assert ds.stems == ["a", "b"] and load_schema(out).num_classes == 7


def test_skip_crowd_and_link(tmp_path):
    coco, img_dir, expected = synthetic(tmp_path)
    out = tmp_path / "ds"
    rep = import_coco(coco, img_dir, out, link=True, skip_crowd=True, log=lambda m: None)
    a = np.zeros((H, W), np.uint8)                     # the crowd door is not painted
    a[0:9, 0:9] = 5
    a[5:7, 5:7] = 3
    np.testing.assert_array_equal(cv2.imread(str(out / "masks" / "a.png"), cv2.IMREAD_UNCHANGED), a)
    assert (out / "images" / "a.jpg").is_symlink()
    assert any("crowd" in w for w in rep.warnings) and rep.empty == ["b.jpg"]


def test_decode_rle():
    assert rle_string([3, 2, 5, 2, 4]) == "3250O"          # hand-worked: delta + sign bit
    assert rle_string([100]) == "T3"                        # hand-worked: two 5-bit groups
    m = decode_rle({"size": [4, 4], "counts": "3250O"})
    exp = np.zeros(16, np.uint8)
    exp[3:5] = exp[10:12] = 1
    np.testing.assert_array_equal(m, exp.reshape(4, 4).T)  # column-major
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = (rng.random((37, 23)) < rng.random()).astype(np.uint8)
        big = np.zeros((300, 200), np.uint8)
        big[50:250, 20:180] = 1                             # long runs: multi-group counts
        for mk in (mask, big):
            c = rle_counts(mk)
            np.testing.assert_array_equal(decode_rle({"size": list(mk.shape), "counts": c}), mk)
            np.testing.assert_array_equal(decode_rle({"size": list(mk.shape), "counts": rle_string(c)}), mk)
    with pytest.raises(CocoError, match="sum"):
        decode_rle({"size": [4, 4], "counts": [3, 2]})


def test_rasterize_ties_by_annotation_id():
    sq = [[0, 0, 3, 0, 3, 3, 0, 3]]
    anns = [{"id": 2, "category_id": 2, "area": 16, "segmentation": sq},
            {"id": 1, "category_id": 1, "area": 16, "segmentation": sq}]
    m = rasterize(anns, 5, 5, {1: 1, 2: 2})
    assert (m[:4, :4] == 2).all() and m[4].sum() == 0       # id 1 first, id 2 painted over it


# --------------------------------------------------------------------------------- class values

def cats(*pairs):
    return [{"id": i, "name": n} for i, n in pairs]


def test_category_values_rules():
    # DSMLR: background with the smallest id -> value = id - that id
    assert category_values(cats((1, "_background_"), (2, "a"), (5, "b"))) == {1: 0, 2: 1, 5: 4}
    # no background category: ids kept as values
    assert category_values(cats((1, "a"), (7, "b"))) == {1: 1, 7: 7}
    # 0-based ids without a background: shifted to start at 1
    assert category_values(cats((0, "a"), (1, "b"))) == {0: 1, 1: 2}
    # background not the smallest id: it becomes 0, the others keep their ids
    assert category_values(cats((1, "a"), (2, "Background"), (3, "b"))) == {1: 1, 2: 0, 3: 3}
    # explicit background category
    assert category_values(cats((3, "sky"), (4, "car")), background_category="sky") == {3: 0, 4: 1}
    assert infer_hflip_pairs(["background", "Left-Eye", "Right-Eye", "left", "right", "leftover"]) == [
        ("Left-Eye", "Right-Eye"), ("left", "right")]


def test_category_value_errors():
    with pytest.raises(CocoError, match="8-bit"):
        category_values(cats((1, "a"), (300, "b")))
    with pytest.raises(CocoError, match="several background"):
        category_values(cats((1, "background"), (2, "_background_")))
    with pytest.raises(CocoError, match="not a category"):
        category_values(cats((1, "a")), background_category="sky")
    with pytest.raises(CocoError, match="duplicate category ids"):
        category_values(cats((1, "a"), (1, "b")))


# ------------------------------------------------------------------------------------- import errors

def test_missing_image(tmp_path):
    coco, img_dir, _ = synthetic(tmp_path)
    (img_dir / "b.jpg").unlink()
    with pytest.raises(CocoError, match=r"missing from .*sub/b\.jpg"):
        import_coco(coco, img_dir, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()                   # nothing written on error
    logs = []
    rep = import_coco(coco, img_dir, tmp_path / "ds", skip_missing=True, log=logs.append)
    assert rep.images == 1 and any("sub/b.jpg" in line for line in logs)


def test_unknown_category_and_image(tmp_path):
    coco, img_dir, _ = synthetic(tmp_path)
    coco["annotations"].append({"id": 99, "image_id": 1, "category_id": 42, "area": 1,
                                "segmentation": [[0, 0, 1, 0, 1, 1]]})
    with pytest.raises(CocoError, match=r"category 42: annotation\(s\) 99"):
        import_coco(coco, img_dir, tmp_path / "ds")
    coco["annotations"][-1].update(category_id=2, image_id=77)
    logs = []
    rep = import_coco(coco, img_dir, tmp_path / "ds", log=logs.append)
    assert rep.images == 2 and any("99 (image_id 77)" in line for line in logs)


def test_size_mismatch_and_nonempty_output(tmp_path):
    coco, img_dir, _ = synthetic(tmp_path)
    coco["images"][0]["width"] = W + 1
    with pytest.raises(CocoError, match=r"a\.jpg: is 10x12 but the COCO file says 11x12"):
        import_coco(coco, img_dir, tmp_path / "ds")
    coco["images"][0]["width"] = W
    import_coco(coco, img_dir, tmp_path / "ds", log=lambda m: None)
    with pytest.raises(CocoError, match="already has files"):
        import_coco(coco, img_dir, tmp_path / "ds")


def test_cli_errors(tmp_path, capsys):
    coco, img_dir, _ = synthetic(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["--coco", str(tmp_path / "bad.json"), "--images", str(img_dir),
                 "--out", str(tmp_path / "ds")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--background-category" in capsys.readouterr().out
    # a bad argument is one error line and exit status 2, like every other expected problem
    assert main(["--coco", "x", "--images", "y", "--out", "z", "--copy", "--link"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "not allowed with argument --copy" in err
