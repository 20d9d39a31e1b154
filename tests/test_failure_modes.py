"""Issue 13, "bad input and failures: nothing silent, nothing unsafe, nothing lost": one section per
numbered item of the issue, each test written against what the issue saw go wrong."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import REPO, TINY_SCHEMA, make_tiny_dataset, tiny_overrides
from workbench.core import config
from workbench.core.schema import DEFAULT_SCHEMA, ClassSchema
from workbench.data.preprocess import normalization_meta
from workbench.exceptions import (AnalysisError, CocoError, ConfigError, DatasetError, DistillError,
                                  ImageReadError, ModelFileError, TrainingDivergedError)
from workbench.models.build import build_model
from workbench.models.modelfile import load_model, read_metadata, save_model

PY = sys.executable
ENV = dict(os.environ, HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1", OMP_NUM_THREADS="1")
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def run_cli(args: list, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """A command of the repository (script path or ``-m module``) run from ``cwd`` (never the
    repository: commands with relative default paths such as runs/ must not touch the real ones)."""
    return subprocess.run([PY, *[str(a) for a in args]], cwd=cwd, env=dict(ENV, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=timeout)


def assert_one_error_line(r: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit status 2, no traceback, exactly one ``error:`` line; returns it."""
    assert r.returncode == 2, f"exit {r.returncode}\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, r.stderr[-3000:]
    message = r.stderr[r.stderr.index(errors[0]):]  # the error line and the list it may introduce
    for needle in needles:
        assert needle in message, message
    return errors[0]


def tiny_model_file(path: Path, schema: ClassSchema = DEFAULT_SCHEMA, **meta_extra) -> Path:
    torch.manual_seed(0)
    model = build_model("Unet", "tf_efficientnet_lite0", schema.num_classes, encoder_weights=None)
    meta = {"arch": "Unet", "encoder": "tf_efficientnet_lite0", "schema": schema.to_dict(), "input_size": [64, 64],
            "normalization": normalization_meta("imagenet"), "resize": "squash", **meta_extra}
    save_model(path, model, meta, dtype=torch.float16)
    return path


def rewrite_metadata(src: Path, dst: Path, edit) -> Path:
    """A copy of model file ``src`` whose raw metadata string is ``edit(metadata_json_text)``."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(src), framework="pt") as f:
        raw = f.metadata()["carparts"]
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(dst), metadata={"carparts": edit(raw)})
    return dst


def photo_dir(root: Path, n: int = 2) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(root / f"p{i}.jpg"), np.full((40, 50, 3), 90 + 20 * i, np.uint8))
    return root


# ======================================================================== 1. script injection in reports

PAYLOADS = [  # each would add an element whose id contains "pwned" if its markup ran
    "<img src=x onerror=\"var e=document.createElement('i');e.id='pwn'+'ed1';document.body.appendChild(e)\">",
    "<script>document.write('<b id=pwn'+'ed2></b>')</script>",
    "hood</td><td><svg onload=\"document.body.appendChild(document.createElement('u')).id='pwn'+'ed3'\">",
]
STEM_PAYLOAD = "car<img src=y onerror=document.body.appendChild(document.createElement('s')).id='pwn'+'ed4'>"


def _coco_with_hostile_names(tmp_path: Path) -> tuple[dict, Path]:
    """A COCO file whose category names are script payloads, and its images (one hostile file name)."""
    img_dir = tmp_path / "coco_images"
    img_dir.mkdir()
    names = ["_background_", *PAYLOADS, "left_door", "right_door"]
    stems = ["car0", "car1", STEM_PAYLOAD]
    images, annotations = [], []
    for i, stem in enumerate(stems):
        cv2.imwrite(str(img_dir / f"{stem}.png"), np.full((32, 40, 3), 60 + 30 * i, np.uint8))
        images.append({"id": i + 1, "file_name": f"{stem}.png", "height": 32, "width": 40})
        for k in range(len(names) - 1):       # one rectangle per class, at different places per image
            x0, y0 = 2 + 6 * k, 2 + 3 * i
            annotations.append({"id": 100 * i + k, "image_id": i + 1, "category_id": k + 2, "iscrowd": 0,
                                "segmentation": [[x0, y0, x0 + 5, y0, x0 + 5, y0 + 20, x0, y0 + 20]]})
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)]}
    return coco, img_dir


@pytest.fixture
def hostile_report(tmp_path):
    """A dataset imported from COCO with payload class names and file names, predictions that
    confuse those classes, and the analysis report of them."""
    from analysis import report
    from workbench.data.coco import import_coco
    coco, img_dir = _coco_with_hostile_names(tmp_path)
    data = tmp_path / "data"
    import_coco(coco, img_dir, data, log=lambda m: None)
    assert [c["name"] for c in json.loads((data / "classes.json").read_text())["classes"]][1:4] == PAYLOADS
    pred = tmp_path / "pred"
    pred.mkdir()
    for mask_path in (data / "masks").glob("*.png"):
        m = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
        p = m.copy()
        p[m == 1], p[m == 2] = 2, 3          # payload classes taken for each other: confusion hints name them
        cv2.imwrite(str(pred / mask_path.name), p)
    out = tmp_path / "report"
    assert report.main(["--pred", str(pred), "--data", str(data), "--out", str(out), "--worst", "3",
                        "--tile", "96"]) == 0
    return out


def _dump_dom(page: Path, profile: Path) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--virtual-time-budget=3000", "--dump-dom", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert "<body" in proc.stdout, f"chromium dumped no DOM:\n{proc.stderr[-2000:]}"
    return proc.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_1_hostile_class_and_file_names_run_no_script_in_the_browser(hostile_report, tmp_path):
    # the detector works: the same payloads unescaped in a page do run
    control = tmp_path / "control.html"
    control.write_text("<!DOCTYPE html><html><body>" + "".join(PAYLOADS) + STEM_PAYLOAD + "</body></html>")
    assert re.search(r'id="pwned\d"', _dump_dom(control, tmp_path / "profile0"))
    dom = _dump_dom(hostile_report / "report.html", tmp_path / "profile1")
    assert "pwned" not in dom, re.findall(r".{80}pwned.{40}", dom)
    assert "&lt;script&gt;document.write" in dom        # shown as text instead
    assert "Part confusions" in dom                      # the hints (which name the classes) are on the page


def test_1_markdown_report_escapes_names(hostile_report):
    md = (hostile_report / "report.md").read_text()
    assert "<img" not in md and "<script" not in md and "<svg" not in md and "</td>" not in md
    assert "&lt;script&gt;" in md


# ============================================================================== 2. duplicate stems

def test_2_duplicate_stems_are_rejected_naming_both_files(tiny_data):
    cv2.imwrite(str(tiny_data / "images" / "img01.png"), np.zeros((48, 56, 3), np.uint8))
    from workbench.data.dataset import load_dataset
    with pytest.raises(DatasetError) as err:
        load_dataset(tiny_data, 32)
    line = next(p for p in err.value.problems if "img01.jpg" in p)
    assert "img01.png" in line and "stem" in line


# ================================================================================ 3. divergence

def test_3_divergence_stops_with_one_error_and_saves_no_model(tiny_data, tmp_path):
    out = tmp_path / "run"
    r = run_cli([REPO / "train.py", *tiny_overrides(tiny_data, out, lr=1e8, epochs=4)], cwd=tmp_path)
    assert_one_error_line(r, "diverged", "lr=")
    assert not (out / "model.safetensors").exists()
    for metrics in out.glob("metrics.json"):
        assert "NaN" not in metrics.read_text()
    assert not list(out.glob(".*tmp*"))


def test_3_resume_from_the_last_finite_checkpoint_after_divergence(tiny_data, tmp_path, monkeypatch):
    from workbench.data.dataset import load_dataset
    from workbench.data.folds import split_for
    from workbench.training import fit
    from workbench.training import trainer as trainer_mod

    def run(out):
        cfg = config.resolve(tiny_overrides(tiny_data, out, epochs=3))
        ds = load_dataset(cfg["data"], cfg["image_size"])
        tr, va, _ = split_for(cfg, ds)
        return fit(cfg, ds, tr, va)

    reference = run(tmp_path / "ref")
    real_step = trainer_mod.Trainer.train_step

    def nan_from_step_3(self, batch):  # every step of epoch 2 (and on) has a NaN loss
        if self.state["step"] >= 2:
            self.optimizer.zero_grad(set_to_none=True)
            return None
        return real_step(self, batch)

    monkeypatch.setattr(trainer_mod.Trainer, "train_step", nan_from_step_3)
    with pytest.raises(TrainingDivergedError, match="diverged"):
        run(tmp_path / "cut")
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    monkeypatch.setattr(trainer_mod.Trainer, "train_step", real_step)
    resumed = run(tmp_path / "cut")           # the same command resumes after epoch 1
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert resumed["val_miou"] == pytest.approx(reference["val_miou"], abs=1e-3)


def test_3_model_file_with_non_finite_weights_is_refused(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file
    good = tiny_model_file(tmp_path / "good.safetensors")
    with safe_open(str(good), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    first = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[first] = torch.full_like(tensors[first], float("nan"))
    bad = tmp_path / "nan.safetensors"
    save_file(tensors, str(bad), metadata=metadata)
    with pytest.raises(ModelFileError, match="not finite"):
        load_model(bad)
    r = run_cli([REPO / "inference.py", "--input", photo_dir(tmp_path / "in"), "--output", tmp_path / "out",
                 "--weights", bad, "--quiet"], cwd=tmp_path)
    assert_one_error_line(r, "nan.safetensors", "not finite")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_3_non_finite_weights_are_never_written(tmp_path):
    model = build_model("Unet", "tf_efficientnet_lite0", DEFAULT_SCHEMA.num_classes, encoder_weights=None)
    with torch.no_grad():
        next(model.parameters()).fill_(float("inf"))
    meta = {"arch": "Unet", "encoder": "tf_efficientnet_lite0", "schema": DEFAULT_SCHEMA.to_dict(),
            "input_size": [64, 64], "normalization": normalization_meta("imagenet")}
    with pytest.raises(ModelFileError, match="not finite"):
        save_model(tmp_path / "inf.safetensors", model, meta)
    assert list(tmp_path.iterdir()) == []


def test_3_nan_teacher_probabilities_never_become_soft_labels(tiny_data, tmp_path, monkeypatch):
    from workbench.data.dataset import load_dataset
    from workbench.distillation import soft_labels as sl
    from workbench.distillation.teachers import Teacher
    schema = ClassSchema.from_dict(TINY_SCHEMA)
    ds = load_dataset(tiny_data, 64)
    path = tiny_model_file(tmp_path / "t.safetensors", schema)
    teacher = Teacher("t", "fam", 0, tmp_path, path, read_metadata(path))
    monkeypatch.setattr(sl.tta, "flip_tta", lambda model, x, *a, **k: torch.full(
        (len(x), schema.num_classes, 64, 64), float("nan")))
    with pytest.raises(DistillError, match="non-finite"):
        sl.soft_labels([teacher], {"fam": 1.0}, ds, np.arange(4), tmp_path / "cache", device_name="cpu")
    assert not list((tmp_path / "cache").glob("*.npy"))


def test_3_nan_online_targets_name_the_teachers_not_the_learning_rate(tiny_data, tmp_path, monkeypatch):
    from workbench.data.dataset import load_dataset
    from workbench.distillation import soft_labels as sl
    from workbench.distillation.online_teacher import OnlineTeacher
    from workbench.distillation.teachers import Teacher
    schema = ClassSchema.from_dict(TINY_SCHEMA)
    ds = load_dataset(tiny_data, 64)
    path = tiny_model_file(tmp_path / "t.safetensors", schema)
    teacher = OnlineTeacher([Teacher("t", "fam", 0, tmp_path, path, read_metadata(path))], {"fam": 1.0}, ds, "cpu")
    monkeypatch.setattr(sl.tta, "flip_tta", lambda model, x, *a, **k: torch.full(
        (len(x), schema.num_classes, 64, 64), float("nan")))
    with pytest.raises(DistillError, match="non-finite probabilities.*t fold0"):
        teacher(torch.from_numpy(ds.images[:2]))


# ========================================================================= 4. missing predictions

@pytest.fixture
def ten_predictions(tmp_path):
    """A tiny dataset of 12 images with predictions for 10 of them, one of which is not a PNG."""
    data = make_tiny_dataset(tmp_path / "data")
    pred = tmp_path / "pred"
    shutil.copytree(data / "masks", pred)
    (pred / "img10.png").unlink()
    (pred / "img11.png").unlink()
    (pred / "img03.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return data, pred


def test_4_analysis_says_how_many_predictions_are_missing_or_unreadable(ten_predictions, tmp_path):
    data, pred = ten_predictions
    r = run_cli(["-m", "analysis.report", "--pred", pred, "--data", data, "--out", tmp_path / "rep",
                 "--worst", "2", "--tile", "64"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    text = r.stdout + r.stderr
    assert "2 of 12" in text and "img10" in text and "img11" in text       # missing, named
    assert "1 of 12" in text and "img03" in text                            # unreadable, named
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert summary["images"] == 9
    assert summary["missing_predictions"] == ["img10", "img11"]
    assert [u["stem"] for u in summary["unreadable_predictions"]] == ["img03"]
    assert "9 of 12" in (tmp_path / "rep" / "report.html").read_text()


def test_4_strict_makes_missing_predictions_an_error(ten_predictions, tmp_path):
    data, pred = ten_predictions
    r = run_cli(["-m", "analysis.report", "--pred", pred, "--data", data, "--out", tmp_path / "rep", "--strict"],
                cwd=tmp_path)
    assert_one_error_line(r, "2 of 12", "--strict")
    assert not (tmp_path / "rep" / "report.html").exists()
    r = run_cli(["-m", "analysis.compare", "--a", pred, "--b", data / "masks", "--data", data,
                 "--out", tmp_path / "cmp", "--strict"], cwd=tmp_path)
    assert_one_error_line(r, "missing", "--strict")


# ================================================================================= 5. memory bombs

def _hdr(width: int, height: int) -> bytes:
    """A Radiance .hdr header announcing width x height, followed by a few bytes of pixel data."""
    return b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n" + f"-Y {height} +X {width}\n".encode() + b"\x02\x02" * 2000


def test_5_hdr_bomb_is_refused_from_its_header(tmp_path):
    from workbench.data.imageio import MAX_IMAGE_PIXELS, decode_image, read_image
    data = _hdr(12_000, 12_000)
    assert 12_000 * 12_000 > MAX_IMAGE_PIXELS and len(data) < 20_000
    with pytest.raises(ImageReadError, match="megapixels"):
        decode_image(data)
    (tmp_path / "bomb.hdr").write_bytes(data)
    with pytest.raises(ImageReadError, match="megapixels"):
        read_image(tmp_path / "bomb.hdr")
    # a small .hdr still decodes
    small = cv2.imencode(".hdr", np.full((6, 9, 3), 0.5, np.float32))[1].tobytes()
    assert decode_image(small).image.shape == (6, 9, 3)


def test_5_opencv_pixel_limit_is_set_before_opencv_loads():
    r = subprocess.run([PY, "-c", "import workbench.data.imageio as io, os; print(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'],"
                                  " io.MAX_IMAGE_PIXELS)"], cwd=REPO, env=ENV, capture_output=True, text=True)
    a, b = r.stdout.split()
    assert a == b, r.stderr


def test_5_huge_png_mask_and_huge_file_are_refused_before_decoding(tiny_data, tmp_path):
    from workbench.data.dataset import load_dataset
    from workbench.data.imageio import MAX_FILE_BYTES, read_mask
    # a 20000 x 20000 PNG mask compresses to a few hundred kB
    from PIL import Image
    big = tmp_path / "big.png"
    Image.new("L", (20_000, 20_000)).save(big, optimize=False, compress_level=1)
    assert big.stat().st_size < 5_000_000
    with pytest.raises(ImageReadError, match="megapixels"):
        read_mask(big)
    # a 3 GB file (sparse: it takes no disk) in images/ is refused by its size, never read
    huge = tiny_data / "images" / "img02.jpg"
    huge.unlink()
    with open(huge, "wb") as f:
        f.truncate(3 * 2**30)
    assert huge.stat().st_size > MAX_FILE_BYTES
    with pytest.raises(DatasetError) as err:
        load_dataset(tiny_data, 32)
    assert any("img02.jpg" in p and "too large" in p for p in err.value.problems), err.value.problems


def test_5_coco_rle_size_and_polygons_are_bounded_by_the_image(tmp_path):
    from workbench.data.coco import decode_rle, import_coco
    with pytest.raises(CocoError, match="megapixels"):
        decode_rle({"size": [60_000, 60_000], "counts": [3_600_000_000]})
    img_dir = photo_dir(tmp_path / "src", 1)
    coco = {"images": [{"id": 1, "file_name": "p0.jpg", "height": 40, "width": 50}],
            "categories": [{"id": 1, "name": "hood"}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 1,
                             "segmentation": {"size": [60_000, 60_000], "counts": [3_600_000_000]}}]}
    with pytest.raises(CocoError, match="annotation 7"):
        import_coco(coco, img_dir, tmp_path / "a", log=lambda m: None)
    coco["annotations"] = [{"id": 8, "image_id": 1, "category_id": 1,
                            "segmentation": [[0, 0, 1e12, 0, 1e12, 1e12]]}]
    with pytest.raises(CocoError, match="annotation 8.*outside"):
        import_coco(coco, img_dir, tmp_path / "b", log=lambda m: None)
    coco["annotations"] = []
    coco["images"][0].update(height=100_000, width=100_000)
    with pytest.raises(CocoError, match="megapixels"):
        import_coco(coco, img_dir, tmp_path / "c", log=lambda m: None)


@pytest.mark.parametrize("edit, message", [
    (lambda m: dict(m, input_size=[100000, 100000]), "input_size"),
    (lambda m: dict(m, input_size=[64]), "input_size"),
    (lambda m: dict(m, input_size="64"), "input_size"),
    (lambda m: dict(m, cleanup="on"), "cleanup"),
    (lambda m: dict(m, cleanup={"enabled": "false", "min_area": {}}), "enabled"),
    (lambda m: dict(m, tta={"hflip": True, "scales": [1e9]}), "scales"),
    (lambda m: dict(m, normalization={"mean": [0.5] * 3, "std": [0, 1, 1]}), "std"),
    (lambda m: dict(m, decoder_channels=["a"]), "decoder_channels"),
    (lambda m: dict(m, arch=7), "arch"),
])
def test_5_model_metadata_is_validated_with_types_and_ranges(tmp_path, tiny_model, edit, message):
    bad = rewrite_metadata(tiny_model, tmp_path / "bad.safetensors", lambda raw: json.dumps(edit(json.loads(raw))))
    with pytest.raises(ModelFileError, match=message):
        read_metadata(bad)


# ============================================================================ 6. atomic COCO import

def test_6_failed_coco_import_leaves_nothing_and_stale_leftovers_are_cleaned(tmp_path, monkeypatch):
    from workbench.data import coco as coco_mod
    img_dir = photo_dir(tmp_path / "src", 3)
    coco = {"images": [{"id": i, "file_name": f"p{i}.jpg", "height": 40, "width": 50} for i in range(3)],
            "categories": [{"id": 1, "name": "hood"}],
            "annotations": [{"id": i, "image_id": i, "category_id": 1, "segmentation": [[1, 1, 20, 1, 20, 20]]}
                            for i in range(3)]}
    out = tmp_path / "ds"
    real_write, calls = coco_mod.write_mask, []

    def dying_write(path, mask):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        real_write(path, mask)

    monkeypatch.setattr(coco_mod, "write_mask", dying_write)
    with pytest.raises(OSError, match="disk full"):
        coco_mod.import_coco(coco, img_dir, out, log=lambda m: None)
    assert not out.exists() and not list(tmp_path.glob(".ds*"))
    # a leftover of a killed import (its process is gone) is removed by the next one
    dead = _dead_pid()
    stale = tmp_path / f".ds.tmp{dead}"
    (stale / "masks").mkdir(parents=True)
    monkeypatch.setattr(coco_mod, "write_mask", real_write)
    coco_mod.import_coco(coco, img_dir, out, log=lambda m: None)
    assert not stale.exists()
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["p0.png", "p1.png", "p2.png"]


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


# =============================================================== 7. class names rendered as markup

MARKUP_SCHEMA = {"classes": [{"name": "background", "value": 0}, {"name": "hood[/]", "value": 10},
                             {"name": "$\\frac$", "value": 20}, {"name": "[bold red]door", "value": 30},
                             {"name": "back_door", "value": 40}], "hflip_pairs": []}


def test_7_markup_in_class_names_trains_resumes_and_charts(tiny_data, tmp_path, capsys):
    from workbench.reports import charts
    (tiny_data / "classes.json").write_text(json.dumps(MARKUP_SCHEMA))
    out = tmp_path / "run"
    r = run_cli([REPO / "train.py", *tiny_overrides(tiny_data, out, max_steps=1)], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "hood[/]" in r.stdout and "[bold red]door" in r.stdout and (out / "model.safetensors").exists()
    r = run_cli([REPO / "train.py", *tiny_overrides(tiny_data, out, max_steps=1)], cwd=tmp_path)   # resume
    assert r.returncode == 0, r.stderr[-3000:]
    names = [c["name"] for c in MARKUP_SCHEMA["classes"]]
    iou = np.linspace(0.1, 0.9, len(names))
    charts.iou_bars(tmp_path / "iou.png", names, iou, np.full((5, 3), 128))
    charts.confusion_image(tmp_path / "cm.png", np.eye(5, dtype=int) * 10 + 1, names)
    charts.iou_compare_bars(tmp_path / "cmp.png", names, iou, iou[::-1], ("$a$", "b_{1}"))
    assert cv2.imread(str(tmp_path / "iou.png")) is not None


def test_7_console_summary_prints_markup_names_literally(ten_predictions, tmp_path):
    data, pred = ten_predictions
    (data / "classes.json").write_text(json.dumps(MARKUP_SCHEMA))
    r = run_cli(["-m", "analysis.report", "--pred", data / "masks", "--data", data, "--out", tmp_path / "rep",
                 "--worst", "1", "--tile", "64"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "hood[/]" in r.stdout and "[bold red]door" in r.stdout


# ========================================================================== 8. tracebacks

def test_8_unknown_teacher_is_one_error_line(tiny_data, tmp_path):
    r = run_cli([REPO / "distill.py", f"data={tiny_data}", "teachers=[nosuch]", "teacher_folds=[0]"], cwd=tmp_path)
    assert_one_error_line(r, "nosuch")


@pytest.mark.parametrize("override, needle", [
    ("decoder_channels=[a,b]", "decoder_channels"),
    ("teacher_folds=[x]", "teacher_folds"),
    ("image_size=100", "image_size"),
    ("encoder=no_such_encoder", "no_such_encoder"),
    ("folds_file=/", "folds file"),
])
def test_8_bad_override_is_one_error_line(tiny_data, tmp_path, override, needle):
    r = run_cli([REPO / "train.py", *tiny_overrides(tiny_data, tmp_path / "o"), override], cwd=tmp_path)
    assert_one_error_line(r, needle)


def test_8_corrupted_checkpoint_is_one_error_line(tiny_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"PK\x03\x04 this is not a checkpoint")
    r = run_cli([REPO / "train.py", *tiny_overrides(tiny_data, out)], cwd=tmp_path)
    assert_one_error_line(r, "last.pt")


@pytest.mark.parametrize("edit, needle", [
    (lambda raw: raw[:-5], "metadata"),                                             # malformed JSON
    (lambda raw: json.dumps(dict(json.loads(raw), cleanup="on")), "cleanup"),
])
def test_8_bad_model_metadata_is_one_error_line(tmp_path, tiny_model, edit, needle):
    bad = rewrite_metadata(tiny_model, tmp_path / "bad.safetensors", edit)
    r = run_cli([REPO / "inference.py", "--input", photo_dir(tmp_path / "in"), "--output", tmp_path / "out",
                 "--weights", bad, "--quiet"], cwd=tmp_path)
    assert_one_error_line(r, "bad.safetensors", needle)


@pytest.mark.parametrize("script", ["train.py", "distill.py", "inference.py"])
def test_8_help_exits_0(script, tmp_path):
    r = run_cli([REPO / script, "--help"], cwd=tmp_path)
    assert r.returncode == 0 and script in r.stdout and not r.stderr.strip(), r.stderr


# ========================================================================== 9. small things

def test_9_numbers_in_any_yaml_spelling_booleans_only_as_booleans_and_ranges():
    cfg = config.resolve(["lr=1e-4", "weight_decay=1E-5", "epochs=1e1", "warmup_epochs=0", "decoder_lr_mult=2"])
    assert cfg["lr"] == 1e-4 and cfg["weight_decay"] == 1e-5 and cfg["epochs"] == 10
    assert isinstance(cfg["epochs"], int) and isinstance(cfg["warmup_epochs"], float)
    assert config.resolve(["fold=-1"])["out"].endswith("full")
    for bad, message in [("save_oof='false'", "true or false"), ("save_oof=1", "true or false"),
                         ("fold=-5", "fold=-5"), ("epochs=2.5", "integer"), ("lr=-1", "lr"), ("lr=.nan", "lr"),
                         ("kd_weight=1.5", "kd_weight"), ("threads=-2", "threads"), ("crop_size=48", "crop_size")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            config.resolve([bad])


def test_9_recipe_booleans_are_booleans(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text('save_oof: "false"\n')
    with pytest.raises(ConfigError, match="save_oof"):
        config.resolve([f"recipe={recipe}"])


@pytest.mark.parametrize("argv", [
    ["-m", "analysis.report", "--pred", "{pred}", "--data", "{data}", "--out", "o", "--worst", "-3"],
    ["-m", "analysis.report", "--pred", "{pred}", "--data", "{data}", "--out", "o", "--limit", "0"],
    ["-m", "analysis.compare", "--a", "{pred}", "--b", "{data}/masks", "--data", "{data}", "--out", "o", "-k", "-1"],
    ["-m", "analysis.error_map", "--pred", "{pred}/img00.png", "--gt", "{data}/masks/img00.png", "--out", "o.png",
     "--tile", "0"],
])
def test_9_negative_counts_are_rejected(argv, ten_predictions, tmp_path):
    data, pred = ten_predictions
    r = run_cli([a.format(data=data, pred=pred) for a in argv], cwd=tmp_path)
    assert_one_error_line(r, "must be at least")


def test_9_model_files_are_0644_and_stale_temporary_files_are_cleaned(tmp_path, tiny_data):
    old = os.umask(0o022)
    try:
        path = tiny_model_file(tmp_path / "m.safetensors")
        assert path.stat().st_mode & 0o777 == 0o644
        out = tmp_path / "run"
        out.mkdir()
        dead = _dead_pid()
        stale = [out / f".last.tmp{dead}.pt", out / f".model.tmp{dead}.safetensors"]
        for p in stale:
            p.write_bytes(b"half a file")
        alive = out / f".metrics.tmp{os.getppid()}.json"         # a live process's: left alone
        alive.write_bytes(b"{")
        cfg = config.resolve(tiny_overrides(tiny_data, out, max_steps=1))
        from workbench.data.dataset import load_dataset
        from workbench.data.folds import split_for
        from workbench.training import fit
        ds = load_dataset(cfg["data"], cfg["image_size"])
        tr, va, _ = split_for(cfg, ds)
        fit(cfg, ds, tr, va)
        assert not any(p.exists() for p in stale) and alive.exists()
        assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


def test_9_inference_and_reports_remove_what_a_killed_run_left(tmp_path, tiny_model, ten_predictions):
    from analysis import report
    from workbench.inference.cli import main as inference_main
    dead = _dead_pid()
    out = tmp_path / "masks"
    out.mkdir()
    left = out / f".p0.tmp{dead}.png"
    left.write_bytes(b"\x89PNG half")
    assert inference_main(["--input", str(photo_dir(tmp_path / "in")), "--output", str(out), "--weights",
                           str(tiny_model), "--quiet", "--threads", "1", "--workers", "1"]) == 0
    assert not left.exists() and sorted(p.name for p in out.iterdir()) == ["p0.png", "p1.png"]
    data, pred = ten_predictions
    rep = tmp_path / "rep"
    rep.mkdir()
    left = rep / f".report.tmp{dead}.html"
    left.write_text("<html>half")
    assert report.main(["--pred", str(data / "masks"), "--data", str(data), "--out", str(rep), "--worst", "1",
                        "--tile", "64"]) == 0
    assert not left.exists() and (rep / "report.html").stat().st_mode & 0o777 == 0o644 - (0o644 & _umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_9_temporary_file_removed_when_a_write_fails(tmp_path):
    from workbench.core.atomic import atomic_write

    def failing(tmp):
        tmp.write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(tmp_path / "x.bin", failing)
    assert list(tmp_path.iterdir()) == []


def test_9_unreadable_mask_in_analysis_names_the_file(ten_predictions):
    data, pred = ten_predictions
    from workbench.evaluation.sources import FolderSource, resolve_schema
    (data / "masks" / "img05.png").write_bytes(b"junk")
    src = FolderSource(pred, data / "masks", None, resolve_schema(None, data))
    with pytest.raises(AnalysisError, match="img05"):
        src.get("img05")
