"""Analysis reports: error kinds, metrics, flip consistency, HTML report, comparison, panels and a
headless-browser look at the rendered page. Everything runs on tiny synthetic data in tmp_path."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from workbench.core.schema import ClassSchema  # noqa: E402
from workbench.data.preprocess import normalization_meta  # noqa: E402
from workbench.evaluation import error_kinds as E  # noqa: E402
from workbench.evaluation.evaluate import evaluate  # noqa: E402
from workbench.evaluation.flip_consistency import FlipCounts, model_flip_counts  # noqa: E402
from workbench.evaluation.metrics import confusion_matrix, iou_per_class, mean_iou  # noqa: E402
from workbench.evaluation.sources import FolderSource, OOFSource  # noqa: E402
from workbench.inference.postprocess import probs_to_labels  # noqa: E402
from workbench.reports import panels as V  # noqa: E402
from workbench.training.oof import save_oof, to_uint8  # noqa: E402

# background, a left/right pair, their front/back counterparts (orientation pairs too), one single class
SCHEMA = ClassSchema(
    names=("background", "front_left_door", "front_right_door", "back_left_door", "back_right_door", "hood"),
    values=(0, 10, 20, 30, 40, 50),
    hflip_pairs=(("front_left_door", "front_right_door"), ("back_left_door", "back_right_door")),
)
BG, FL, FR, BL, BR, HOOD = range(6)
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


# ----------------------------------------------------------------------------------------- error kinds

def test_error_kinds_each_case():
    #          correct bg, correct part, missed, false part, confusion, left/right, front/back, ignored
    gt = np.array([[BG, HOOD, FL, BG, HOOD, FL, FL, 255]], dtype=np.uint8)
    pred = np.array([[BG, HOOD, BG, HOOD, FL, FR, BL, HOOD]], dtype=np.uint8)
    kinds = E.classify_errors(gt, pred, SCHEMA)
    assert kinds.tolist() == [[E.CORRECT, E.CORRECT, E.MISSED, E.FALSE_PART, E.CONFUSION, E.ORIENTATION,
                               E.ORIENTATION, E.IGNORED]]
    # orientation is symmetric and covers both flip pairs and front/back pairs
    table = E.orientation_table(SCHEMA)
    assert table[FL, FR] and table[FR, FL] and table[FL, BL] and table[BR, FR]
    assert not table[FL, BR] and not table[FL, HOOD]


def test_boundary_band_and_region_split():
    gt = np.zeros((20, 20), dtype=np.uint8)
    gt[5:15, 5:15] = HOOD
    band = E.boundary_band(gt, 1)
    assert band[5, 10] and band[4, 10] and band[6, 10] and not band[10, 10] and not band[0, 0]
    pred = gt.copy()
    pred[4, 5:15] = HOOD       # false part on the edge
    pred[10, 10] = FL          # confusion in the interior
    rc = E.region_counts(E.classify_errors(gt, pred, SCHEMA), gt, 1)
    assert rc.boundary[E.FALSE_PART] == 10 and rc.interior[E.CONFUSION] == 1
    assert rc.boundary_error_share == pytest.approx(10 / 11)


# ------------------------------------------------------------------------------------------- metrics

def _write_pair(root: Path, stem: str, gt_idx: np.ndarray, pred_idx: np.ndarray, schema=SCHEMA):
    lut = schema.index_to_value
    (root / "masks").mkdir(parents=True, exist_ok=True)
    (root / "pred").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "masks" / f"{stem}.png"), lut[gt_idx])
    cv2.imwrite(str(root / "pred" / f"{stem}.png"), lut[pred_idx])


def test_confusion_and_iou_against_hand_computed(tmp_path):
    gt = np.array([[0, 0, 1], [1, 2, 2]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    cm = confusion_matrix(gt, pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert iou_per_class(cm) == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert mean_iou(cm) == pytest.approx(0.5)
    # the same pair through a predictions folder (class values on disk) and the evaluation pass
    schema = ClassSchema(("background", "hood", "wheel"), (0, 7, 9))
    _write_pair(tmp_path, "a", gt.astype(np.uint8), pred.astype(np.uint8), schema)
    ev = evaluate(FolderSource(tmp_path / "pred", tmp_path / "masks", None, schema))
    assert ev.cm.tolist() == cm.tolist()
    assert ev.miou == pytest.approx(0.5) and ev.images[0].miou == pytest.approx(0.5)
    assert ev.pixel_acc == pytest.approx(4 / 6)
    # kinds: 1 false part (gt bg -> hood), 1 missed (wheel -> bg), none else
    assert ev.kind_totals()[[E.MISSED, E.FALSE_PART, E.CONFUSION]].tolist() == [1, 1, 0]


def test_prediction_values_outside_schema_are_an_error(tmp_path):
    gt = np.zeros((4, 4), dtype=np.uint8)
    _write_pair(tmp_path, "a", gt, gt)
    cv2.imwrite(str(tmp_path / "pred" / "a.png"), np.full((4, 4), 99, np.uint8))
    with pytest.raises(ValueError, match="99"):
        evaluate(FolderSource(tmp_path / "pred", tmp_path / "masks", None, SCHEMA))


# ---------------------------------------------------------------------------------- flip consistency

class BrightHalves(torch.nn.Module):
    """Bright pixels are doors: left door in the image's left half, right door in the right half
    (flip-equivariant up to the pair permutation) - or always the left door (not equivariant).
    Expects ``unit`` normalisation (x / 255)."""

    def __init__(self, equivariant: bool):
        super().__init__()
        self.equivariant = equivariant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        bright = x.mean(1) > 127 / 255
        labels = torch.full((n, h, w), BG, dtype=torch.long)
        labels[bright] = FL
        if self.equivariant:
            right = torch.zeros((h, w), dtype=torch.bool)
            right[:, w // 2:] = True
            labels[bright & right] = FR
        return 10.0 * F.one_hot(labels, SCHEMA.num_classes).permute(0, 3, 1, 2).float()


def test_flip_consistency_of_synthetic_models():
    rng = np.random.default_rng(0)
    images = [(rng.random((16, 24, 3)) * 255).astype(np.uint8) for _ in range(3)]
    meta = {"input_size": [16, 24], "normalization": normalization_meta("unit"), "schema": SCHEMA.to_dict()}
    assert model_flip_counts(BrightHalves(True), meta, images).score == pytest.approx(1.0)
    counts = model_flip_counts(BrightHalves(False), meta, images, background=BG,
                               orientation=E.orientation_table(SCHEMA))
    assert counts.score < 0.8
    assert counts.part_score == pytest.approx(0.0)          # every door pixel disagrees ...
    assert counts.orientation_share == pytest.approx(1.0)   # ... as a left/right swap
    assert isinstance(counts, FlipCounts)


# ------------------------------------------------------------------------------ synthetic dataset

def _car(h=32, w=32, shift=0, seed=0):
    """A photo-ish image and its mask: a 'car' box split into front/back doors, a hood strip."""
    rng = np.random.default_rng(seed)
    img = (rng.random((h, w, 3)) * 60 + 40).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    x0, x1 = 4 + shift, 28 + shift
    mask[10:24, x0:(x0 + x1) // 2] = FL
    mask[10:24, (x0 + x1) // 2:x1] = BL
    mask[6:10, x0:x1] = HOOD
    colours = np.array([[0, 0, 0], [200, 60, 60], [60, 200, 60], [60, 60, 200], [200, 200, 60], [220, 220, 220]])
    img[mask > 0] = colours[mask[mask > 0]]
    return img, mask


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """data/ (images, masks, classes.json), two prediction folders and a 2-fold OOF run."""
    root = tmp_path_factory.mktemp("analysis")
    data = root / "data"
    for d in ("images", "masks"):
        (data / d).mkdir(parents=True)
    (data / "classes.json").write_text(json.dumps(SCHEMA.to_dict()))
    pa, pb = root / "pred_a", root / "pred_b"
    pa.mkdir(), pb.mkdir()
    lut = SCHEMA.index_to_value
    stems = [f"car{i}" for i in range(4)]
    preds = {}
    for i, stem in enumerate(stems):
        img, mask = _car(shift=i - 2, seed=i)
        cv2.imwrite(str(data / "images" / f"{stem}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(data / "masks" / f"{stem}.png"), lut[mask])
        a = mask.copy()
        a[mask == FL] = FR                           # orientation swap
        a[20:24][a[20:24] > 0] = BG                  # missed part
        b = mask.copy()
        if i % 2:
            b[mask == HOOD] = FL                     # part confusion
        b[2:4, 2:12] = HOOD                          # false part
        cv2.imwrite(str(pa / f"{stem}.png"), lut[a])
        cv2.imwrite(str(pb / f"{stem}.png"), lut[b])
        preds[stem] = (mask, a)
    # OOF run at S=16: probabilities of prediction A (plain) and of the GT (mirror)
    C, S = SCHEMA.num_classes, 16
    for fold in (0, 1):
        fs = stems[fold::2]
        plain = np.stack([np.eye(C, dtype=np.float32)[cv2.resize(preds[s][1], (S, S), interpolation=cv2.INTER_NEAREST)]
                          .transpose(2, 0, 1) for s in fs])
        mirror = np.stack([np.eye(C, dtype=np.float32)[cv2.resize(preds[s][0], (S, S), interpolation=cv2.INTER_NEAREST)]
                           .transpose(2, 0, 1) for s in fs])
        save_oof(root / "runs" / "toy" / f"fold{fold}", fs, SCHEMA, S, fold, to_uint8(plain), to_uint8(mirror))
    return {"root": root, "data": data, "pred_a": pa, "pred_b": pb, "run": root / "runs" / "toy", "stems": stems}


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if (tag == "img" and k == "src") or (tag == "a" and k == "href"):
                self.links.append(v)


def _check_links(html_file: Path) -> list[str]:
    from urllib.parse import unquote
    p = _Links()
    p.feed(html_file.read_text())
    local = [ln for ln in p.links if not ln.startswith(("#", "http:", "https:", "data:"))]
    missing = [ln for ln in local if not (html_file.parent / unquote(ln)).is_file()]
    assert not missing, f"{html_file} references missing files: {missing}"
    return local


def test_oof_source_upsamples_and_reads_mirror(dataset):
    src = OOFSource(dataset["run"], dataset["data"], tta=False)
    assert src.stems == dataset["stems"] and len(src.fold_dirs) == 2
    item = src.get("car0")
    assert item.pred.shape == item.gt.shape == (32, 32) and item.image.shape == (32, 32, 3)
    pred_a = SCHEMA.value_to_index[cv2.imread(str(dataset["pred_a"] / "car0.png"), cv2.IMREAD_UNCHANGED)]
    assert (item.pred == pred_a).mean() > 0.9   # prediction A, upsampled from 16 px back to 32 px
    assert (item.pred_flip == item.gt).mean() > 0.9
    ev = evaluate(src)
    assert ev.flip is not None and 0.5 < ev.flip.score < 1.0 and ev.flip.orientation_swaps > 0
    assert probs_to_labels(np.eye(3, dtype=np.float32)[np.zeros((4, 4), int)].transpose(2, 0, 1), (8, 8)).shape == (8, 8)


# ------------------------------------------------------------------------------------- CLI + reports

def test_report_cli_writes_linked_html(dataset, tmp_path):
    from analysis import report
    out = tmp_path / "rep"
    d = dataset["data"]
    assert report.main(["--pred", str(dataset["pred_a"]), "--gt", str(d / "masks"), "--images", str(d / "images"),
                        "--out", str(out), "--worst", "3", "--tile", "128", "--all-panels"]) == 0
    links = _check_links(out / "report.html")
    assert {"img/iou.png", "img/confusion.png", "img/errors.png"} <= set(links)
    assert sum(ln.startswith("panels/worst") for ln in links) >= 3
    assert len(list((out / "panels" / "all").glob("*.png"))) == 4
    md = (out / "report.md").read_text()
    for ln in re.findall(r"\]\(([^)]+\.png)\)", md):
        assert (out / ln).is_file(), ln
    summary = json.loads((out / "summary.json").read_text())
    # the schema came from the masks folder's parent: the orientation swap is recognised
    assert summary["error_share_of_errors"]["orientation swap"] > 0.3
    assert "Orientation" in (out / "report.html").read_text()


def test_report_cli_on_oof_run(dataset, tmp_path):
    from analysis import report
    out = tmp_path / "rep_oof"
    assert report.main(["--oof", str(dataset["run"]), "--data", str(dataset["data"]), "--out", str(out),
                        "--worst", "2", "--tile", "96", "--folds", "0", "1"]) == 0
    _check_links(out / "report.html")
    s = json.loads((out / "summary.json").read_text())
    assert s["images"] == 4 and 0 < s["flip_consistency"] < 1


def test_compare_cli_and_bad_input(dataset, tmp_path, capsys):
    from analysis import compare
    out = tmp_path / "cmp"
    d = dataset["data"]
    assert compare.main(["--a", str(dataset["pred_a"]), "--b", str(dataset["pred_b"]), "--gt", str(d / "masks"),
                         "--images", str(d / "images"), "--out", str(out), "--names", "TTA on", "TTA off",
                         "-k", "2", "--worst", "2", "--tile", "96"]) == 0
    assert "Δ = B − A (TTA off minus TTA on)" in capsys.readouterr().out  # which side is subtracted
    assert "Δ = B − A" in (out / "report.md").read_text() and "Δ (B − A)" in (out / "report.html").read_text()
    links = _check_links(out / "report.html")
    assert any(ln.startswith("panels/improve") for ln in links)
    _check_links(out / "TTA_on" / "report.html")
    s = json.loads((out / "summary.json").read_text())
    assert s["names"] == ["TTA on", "TTA off"] and s["per_class_delta"]["front_left_door"] > 0.5
    # an expected problem is one clear line and exit code 2, no traceback
    assert compare.main(["--a", str(tmp_path / "nope"), "--b", str(dataset["pred_b"]), "--gt", str(d / "masks"),
                         "--out", str(out)]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_error_map_single_panel_and_help(dataset, tmp_path, capsys):
    from analysis import compare, error_map, report
    d = dataset["data"]
    out = tmp_path / "panel.png"
    assert error_map.main(["--image", str(d / "images/car1.jpg"), "--gt", str(d / "masks/car1.png"),
                           "--pred", str(dataset["pred_b"] / "car1.png"), "--out", str(out), "--tile", "200"]) == 0
    panel = cv2.imread(str(out))
    assert panel.shape[1] == 4 * 200 + 3 * 8 + 24 and panel.shape[0] > 200
    for mod in (report, compare, error_map):
        with pytest.raises(SystemExit) as exc:
            mod.main(["--help"])
        assert exc.value.code == 0
    assert "--oof" in capsys.readouterr().out


def test_palette_distinct_and_pairs_related():
    from workbench.core.schema import load_schema
    for schema in (SCHEMA, load_schema(Path("/nonexistent"))):
        pal = V.class_palette(schema)
        assert len({tuple(c) for c in pal}) == schema.num_classes
    pal = V.class_palette(SCHEMA).astype(int)
    # a left/right pair shares a hue family: closer to each other than to any other part
    d_pair = np.abs(pal[FL] - pal[FR]).sum()
    assert pal[FL].sum() > pal[FR].sum()  # left light, right deep
    assert d_pair < 400


# --------------------------------------------------------------------------------------- browser

@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium); "
                                             "the headless-browser check of the HTML report is skipped")
def test_report_renders_in_headless_chromium(dataset, tmp_path):
    from analysis import report
    out = tmp_path / "rep_browser"
    d = dataset["data"]
    assert report.main(["--pred", str(dataset["pred_a"]), "--data", str(d), "--out", str(out),
                        "--worst", "2", "--tile", "160"]) == 0
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--screenshot={shot}",
           "--window-size=1200,2000", (out / "report.html").resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert shot.is_file(), f"no screenshot; chromium said:\n{proc.stderr[-2000:]}"
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (2000, 1200)
    # below the header: many colours and a good deal of saturated pixels, which only the charts
    # (class-coloured bars, confusion matrix) bring - a page whose images failed to load has text,
    # tables and swatches only (about 3k saturated pixels here, against 50k with its charts)
    body = img[300:2000]
    colours = np.unique(body.reshape(-1, 3) // 8, axis=0)
    non_white = (body.min(-1) < 235).mean()
    hsv = cv2.cvtColor(body, cv2.COLOR_BGR2HSV)
    saturated = int(((hsv[..., 1] > 100) & (hsv[..., 2] > 60)).sum())
    assert len(colours) > 150, f"only {len(colours)} distinct colours: page looks blank"
    assert non_white > 0.05, f"only {non_white:.1%} non-white pixels"
    assert saturated > 15000, f"only {saturated} saturated pixels: charts not rendered?"


# ------------------------------------------------------------------------------------------ OOF tables

def _difference_line(out: str) -> str:
    """The bootstrap's 'B ... minus A ...: +x points (...)' line, from the difference on."""
    line = next(ln for ln in out.splitlines() if "points (95 % interval" in ln)
    return line[line.rindex(": ") + 2:]


def test_oof_tables_pool_folds_and_replace_the_run_in_the_bootstrap(dataset, tmp_path, capsys):
    """A run's per-fold OOF tables, pooled, give the bootstrap exactly what the run itself gives; so do
    a predictions folder's; the tables keep the plain prediction for --no-tta."""
    from analysis.bootstrap import main as bootstrap
    from analysis.oof_table import main as oof_table
    from workbench.evaluation.oof_table import load_table

    data, run = str(dataset["data"]), str(dataset["run"])
    tables = [tmp_path / f"toy_fold{k}.npz" for k in (0, 1)]
    for k, t in enumerate(tables):
        assert oof_table([run, "--data", data, "--folds", str(k), "--out", str(t)]) == 0
    assert oof_table([str(dataset["pred_b"]), "--data", data, "--out", str(tmp_path / "b.npz")]) == 0
    t0 = load_table(tables[0])
    assert t0.stems == dataset["stems"][0::2] and t0.tta is True and t0.confusion.shape == (2, 6, 6)
    assert t0.confusion_plain is not None and (t0.confusion_plain != t0.confusion).any()  # A plain, GT mirrored
    assert load_table(tmp_path / "b.npz").tta is None and load_table(tmp_path / "b.npz").confusion_plain is None
    capsys.readouterr()

    for extra in ([], ["--no-tta"]):
        assert bootstrap(["--a", run, "--b", str(dataset["pred_b"]), "--data", data, "--samples", "200", *extra]) == 0
        from_run = _difference_line(capsys.readouterr().out)
        assert bootstrap(["--a", *map(str, tables), "--b", str(tmp_path / "b.npz"), "--samples", "200", *extra]) == 0
        out = capsys.readouterr().out
        assert _difference_line(out) == from_run and "4 images" in from_run and "hood" in out


def test_oof_tables_refuse_bad_files_and_double_counting(dataset, tmp_path, capsys):
    from analysis.bootstrap import main as bootstrap
    from analysis.oof_table import main as oof_table

    t0 = tmp_path / "t0.npz"
    assert oof_table([str(dataset["run"]), "--data", str(dataset["data"]), "--folds", "0", "--out", str(t0)]) == 0
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    cases = {
        (str(t0), str(t0)): "already scored by another table",
        (str(tmp_path / "bad.npz"),): "bad.npz: cannot read an OOF table",
        (str(tmp_path / "other.npz"),): "other.npz: not an OOF table",
        (str(t0), str(dataset["run"])): "not both",
    }
    for a, message in cases.items():
        capsys.readouterr()
        assert bootstrap(["--a", *a, "--b", str(t0), "--samples", "100"]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert oof_table([str(dataset["run"]), "--data", str(dataset["data"]), "--out", str(tmp_path / "t.csv")]) == 2


def test_postprocessing_ablation_scores_a_model_files_cleanup_on_held_out_folds(dataset, tmp_path, model_file, capsys):
    """Every fold's prediction is the ground truth plus a 1-pixel false hood speck: flip TTA changes
    nothing (both views agree), the file's hood cleanup removes the speck and reaches 100 %, a file
    without cleanup scores as flip TTA; the pooled row and the JSON agree with the folds."""
    from analysis.postprocessing import main as postprocessing

    C, S = SCHEMA.num_classes, 16
    run, half = tmp_path / "runs" / "speck", tmp_path / "runs" / "speck_fold0_only"
    stems = dataset["stems"]
    for fold in (0, 1):
        fs = stems[fold::2]
        views = {True: [], False: []}
        for s in fs:
            small = cv2.resize(cv2.imread(str(dataset["data"] / "masks" / f"{s}.png"), cv2.IMREAD_GRAYSCALE),
                               (S, S), interpolation=cv2.INTER_NEAREST)
            idx = SCHEMA.value_to_index[small]
            views[False].append(np.eye(C, dtype=np.float32)[idx].transpose(2, 0, 1))
            idx[0, 0] = HOOD                          # false part: one pixel of a 16x16 prediction
            views[True].append(np.eye(C, dtype=np.float32)[idx].transpose(2, 0, 1))
        probs = to_uint8(np.stack(views[True]))
        save_oof(run / f"fold{fold}", fs, SCHEMA, S, fold, probs, probs)
        probs = to_uint8(np.stack(views[fold == 0]))  # the second run: only fold 0 has the speck
        save_oof(half / f"fold{fold}", fs, SCHEMA, S, fold, probs, probs)
    cleaning = model_file(tmp_path / "clean.safetensors", SCHEMA, cleanup={"enabled": True, "min_area": {"hood": 0.01}})
    plain = model_file(tmp_path / "plain.safetensors", SCHEMA, cleanup={"enabled": False, "min_area": {}})
    out = tmp_path / "pp.json"
    data = str(dataset["data"])
    assert postprocessing([str(run), "--data", data, "--model", str(cleaning), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["folds"]) == {"fold0", "fold1"} and result["pooled"]["images"] == 4
    for row in (*result["folds"].values(), result["pooled"]):
        assert row["tta"] == row["no_tta"] < 1 and row["tta_file_cleanup"] > row["tta"]
        assert row["tta_cleanup_chosen_here"] >= row["tta_file_cleanup"] and "hood" in row["cleanup_chosen_here"]
    assert result["pooled"]["file_cleanup_minus_tta"]["delta"] > 0 and "pooled" in capsys.readouterr().out
    # cross-fitted: each fold cleaned with what the rule picks on the other fold, which has the same speck
    for fold in result["folds"].values():
        assert "hood" in fold["cleanup_chosen_on_other_folds"] and fold["tta_cleanup_cross_fitted"] > fold["tta"]
    assert result["pooled"]["cross_fitted_cleanup_minus_tta"]["delta"] > 0
    # only fold 0 has the speck: fold 1 is cleaned with fold 0's choice, fold 0 with fold 1's (nothing)
    assert postprocessing([str(half), "--data", data, "--model", str(cleaning), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["folds"]["fold0"]["cleanup_chosen_on_other_folds"] == {}
    assert "hood" in result["folds"]["fold1"]["cleanup_chosen_on_other_folds"]
    assert result["folds"]["fold0"]["tta_cleanup_cross_fitted"] == result["folds"]["fold0"]["tta"] < 1
    assert result["folds"]["fold1"]["tta_cleanup_cross_fitted"] == result["folds"]["fold1"]["tta"]  # no speck to remove

    assert postprocessing([str(run), "--data", data, "--model", str(plain), "--folds", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert list(result["folds"]) == ["fold1"] and result["pooled"]["tta_file_cleanup"] == result["pooled"]["tta"]
    assert "cross_fitted_cleanup_minus_tta" not in result["pooled"]  # one fold: nothing to cross-fit from
    assert result["pooled"]["file_cleanup_minus_tta"]["delta"] == 0

    wrong = model_file(tmp_path / "wrong.safetensors", SCHEMA, cleanup={"enabled": True, "min_area": {"wheel": 0.01}})
    assert postprocessing([str(run), "--data", data, "--model", str(wrong)]) == 2
    assert "['wheel']" in capsys.readouterr().err


# ------------------------------------------------------------------------------- photo resolution

COLOURS = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200], [200, 200, 60], [220, 220, 220]])  # _car's parts


class _ColourOracle:
    """A 'model' that reads the part off the paint colour of _car's photos: perfect at full size,
    wrong where shrinking blends a part's colour with its neighbours'. Records what it predicted."""

    def __init__(self, model_file: Path):
        self.schema, self.model_file, self.calls = SCHEMA, model_file, []

    def predict_labels(self, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        assert image.shape[:2] == size  # the shrunk photo, predicted at its own size
        self.calls.append(size)
        dist = np.linalg.norm(image[..., None, :].astype(float) - COLOURS, axis=-1)
        return np.where(dist.min(-1) < 40, dist.argmin(-1) + 1, BG).astype(np.uint8)


def test_shrunk_source_scores_each_fold_with_its_own_model_at_the_shrunk_size(dataset, tmp_path):
    from workbench.evaluation.metrics import mean_iou
    from workbench.evaluation.oof_table import score_source
    from workbench.evaluation.resolution import ShrunkSource, shrunk_shape

    assert shrunk_shape((300, 400), 200) == (150, 200) and shrunk_shape((100, 50), 200) == (100, 50)
    assert shrunk_shape((1000, 3), 10) == (10, 1)
    run, data = tmp_path / "run", tmp_path / "data"
    shutil.copytree(dataset["run"], run)
    shutil.copytree(dataset["data"], data)
    for i, stem in enumerate(dataset["stems"]):  # lossless photos: the oracle reads exact colours
        (data / "images" / f"{stem}.jpg").unlink()
        cv2.imwrite(str(data / "images" / f"{stem}.png"), cv2.cvtColor(_car(shift=i - 2, seed=i)[0], cv2.COLOR_RGB2BGR))
    for fold in (0, 1):
        (run / f"fold{fold}" / "model.safetensors").write_bytes(b"fold model")
    made = {}

    def oracle(model_file, device):
        made[model_file.parent.name] = _ColourOracle(model_file)
        return made[model_file.parent.name]

    full = ShrunkSource(run, data, 64, make_predictor=oracle)  # larger than the 32-px photos: as they are
    assert full.stems == sorted(dataset["stems"])
    table = score_source(full)
    assert mean_iou(table.confusion.sum(0)) == 1.0 and (table.confusion.sum((1, 2)) == 32 * 32).all()
    assert made["fold0"].calls == [(32, 32)] * 2 and made["fold1"].calls == [(32, 32)] * 2  # held-out stems only

    small = score_source(ShrunkSource(run, data, 12, make_predictor=oracle))
    assert (small.confusion.sum((1, 2)) == 12 * 12).all() and 0.3 < mean_iou(small.confusion.sum(0)) < 1.0
    assert made["fold0"].calls == [(12, 12)] * 2
    fold1 = ShrunkSource(run, data, 12, folds=[1], make_predictor=oracle)
    assert fold1.stems == dataset["stems"][1::2]
    for stem in fold1.stems:
        item = fold1.get(stem)
        assert item.gt.shape == item.pred.shape == item.image.shape[:2] == (12, 12)
        assert set(np.unique(item.gt)) <= {BG, FL, BL, HOOD}  # nearest neighbour: no new labels


def test_resolution_cli_writes_tables_and_refuses_a_run_without_model_files(dataset, tmp_path, model_file, capsys):
    """End to end with the real Predictor (a random tiny model file): every size scored at that size,
    compared with the largest; a fold without its model file is a one-line error."""
    from analysis.resolution import main as resolution
    from workbench.evaluation.oof_table import load_table

    run = tmp_path / "run"
    shutil.copytree(dataset["run"], run)
    model_file(run / "fold0" / "model.safetensors", SCHEMA, input_size=32, tta={"hflip": True})
    out = tmp_path / "res"
    assert resolution([str(run), "--data", str(dataset["data"]), "--folds", "0", "--sizes", "16", "32",
                       "--out", str(out)]) == 0
    result = json.loads((out / "resolution.json").read_text())
    assert result["reference_px"] == 32 and result["images"] == 2 and set(result["sizes"]) == {"32", "16"}
    assert "minus_reference" in result["sizes"]["16"] and "minus_reference" not in result["sizes"]["32"]
    t16 = load_table(out / "oof_table_16px.npz")
    assert t16.stems == dataset["stems"][0::2] and t16.tta is True and (t16.confusion.sum((1, 2)) == 256).all()
    assert "minus 32 px" in capsys.readouterr().out
    assert resolution([str(run), "--data", str(dataset["data"]), "--folds", "1"]) == 2
    err = capsys.readouterr().err
    assert "fold1: no model.safetensors" in err and "Traceback" not in err


def test_exclusive_parts_checks_the_masks_and_scores_the_rule_on_oof(dataset, tmp_path, capsys, model_file):
    """The toy masks hold a hood and never a front-right door. Every prediction is the ground truth
    with a 2x2 hood patch called front-right door: the rule (one of hood / front-right door per
    photo) fires on every image and keeps the hood (the larger part, the right one); the
    front-right door, absent from masks and merged predictions alike, has no IoU after. An unknown
    part name is a clean error."""
    from analysis.exclusive_parts import main as exclusive_parts

    C, S = SCHEMA.num_classes, 16
    run, stems = tmp_path / "runs" / "split", dataset["stems"]
    for fold in (0, 1):
        fs = stems[fold::2]
        views = []
        for s in fs:
            idx = SCHEMA.value_to_index[cv2.resize(cv2.imread(str(dataset["data"] / "masks" / f"{s}.png"),
                                                               cv2.IMREAD_GRAYSCALE), (S, S),
                                                    interpolation=cv2.INTER_NEAREST)]
            ys, xs = np.nonzero(idx == HOOD)
            assert ys.size > 4
            idx[ys[:2], xs[:2]] = FR
            idx[ys[-2:], xs[-2:]] = FR
            views.append(np.eye(C, dtype=np.float32)[idx].transpose(2, 0, 1))
        probs = to_uint8(np.stack(views))
        save_oof(run / f"fold{fold}", fs, SCHEMA, S, fold, probs, probs)
    out = tmp_path / "ex.json"
    group = [SCHEMA.names[HOOD], SCHEMA.names[FR]]
    assert exclusive_parts([str(run), "--data", str(dataset["data"]), "--group", *group, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["masks_with_two_or_more"] == []
    r = result["runs"][str(run)]
    assert r["images"] == 4 and r["fired"] == 4 and r["kept_right"] == 4
    assert r["confused_pixels_lowres"] == {"split": 16, "one_member": 0}  # 4 hood pixels a photo, all split photos
    assert r["tta_merged"] > r["tta"] and r["delta"] > 0  # (not 1: the 16-px maps are scored on 32-px masks)
    assert r["iou_after"][SCHEMA.names[HOOD]] > r["iou_before"][SCHEMA.names[HOOD]]
    assert r["iou_before"][SCHEMA.names[FR]] == 0 and np.isnan(r["iou_after"][SCHEMA.names[FR]])
    assert "0 of 4 masks" in capsys.readouterr().out
    assert exclusive_parts([str(run), "--data", str(dataset["data"]), "--group", "hood", "tailgate"]) == 2
    assert "no part named tailgate" in capsys.readouterr().err
    # a model file holding the same group: analysis.postprocessing applies it as the Predictor does
    from analysis.postprocessing import main as postprocessing

    ex = model_file(tmp_path / "ex.safetensors", SCHEMA, exclusive=[group])
    assert postprocessing([str(run), "--data", str(dataset["data"]), "--model", str(ex), "--json", str(out)]) == 0
    pooled = json.loads(out.read_text())["pooled"]
    assert pooled["tta_file_cleanup"] == pytest.approx(r["tta_merged"]) and pooled["file_cleanup_minus_tta"]["delta"] > 0
    # the rule, cross-fitted, keeps the file's group on each fold because it pays on the other one
    assert pooled["exclusive_chosen_here"] == [group] and pooled["cross_fitted_cleanup_minus_tta"]["delta"] > 0
    folds = json.loads(out.read_text())["folds"]
    assert all(f["exclusive_chosen_on_other_folds"] == [group] for f in folds.values())


def test_postprocessing_ablation_scores_the_files_tta_setting(dataset, tmp_path, model_file):
    """The plain view holds a weak false hood speck that the mirrored view does not: flip TTA removes it.
    A file with flip TTA off scores as no TTA, one with it on as flip TTA; the cross-fitted column
    uses the TTA the rule chose on the other fold (on: it pays there)."""
    from analysis.postprocessing import main as postprocessing

    C, S = SCHEMA.num_classes, 16
    run = tmp_path / "runs" / "weak_speck"
    for fold in (0, 1):
        fs = dataset["stems"][fold::2]
        plain, mirrored = [], []
        for s in fs:
            small = cv2.resize(cv2.imread(str(dataset["data"] / "masks" / f"{s}.png"), cv2.IMREAD_GRAYSCALE),
                               (S, S), interpolation=cv2.INTER_NEAREST)
            truth = np.eye(C, dtype=np.float32)[SCHEMA.value_to_index[small]].transpose(2, 0, 1)
            mirrored.append(truth)
            speck = truth.copy()
            speck[:, 0, 0] *= 0.2
            speck[HOOD, 0, 0] = 0.8          # the plain view says hood; the mean of both views does not
            plain.append(speck)
        save_oof(run / f"fold{fold}", fs, SCHEMA, S, fold, to_uint8(np.stack(plain)), to_uint8(np.stack(mirrored)))
    out, data = tmp_path / "pp.json", str(dataset["data"])
    for hflip in (False, True):
        f = model_file(tmp_path / f"tta_{hflip}.safetensors", SCHEMA, tta={"hflip": hflip, "scales": [1.0]},
                       cleanup={"enabled": False, "min_area": {}})
        assert postprocessing([str(run), "--data", data, "--model", str(f), "--json", str(out)]) == 0
        result = json.loads(out.read_text())
        for row in (*result["folds"].values(), result["pooled"]):
            assert row["no_tta"] < row["tta"]
            assert row["tta_file_cleanup"] == row["tta" if hflip else "no_tta"]
            assert row["tta_cleanup_cross_fitted"] == row["tta"]
