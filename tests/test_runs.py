"""Seeing every run: the runs table and overlay (python -m analysis.runs), each run's progress.png
(drawn every epoch, one continuous curve after a resume), the curves in the HTML report, and the
provenance every metrics.json and model file records."""

from __future__ import annotations

import csv
import json
import math

from conftest import tiny_overrides
from workbench.core import config
from workbench.data.dataset import load_dataset
from workbench.data.folds import split_for
from workbench.models.modelfile import read_metadata
from workbench.reports.runs import COLUMNS, collect_runs
from workbench.training import fit, history

PNG = b"\x89PNG\r\n\x1a\n"
PROVENANCE_KEYS = {"git_commit", "git_dirty", "versions", "hardware", "command", "started", "updated", "wall_seconds"}


def fake_metrics(name, family, fold, val, finished=True, planned=None, **extra):
    hist = [{"epoch": e, "train_loss": 2.0 / e, "lr": 1e-3, "seconds": 60.0, "images_per_s": 4.0, "val_miou": v}
            for e, v in enumerate(val, 1)]
    best = max(range(len(val)), key=val.__getitem__) + 1
    return {"name": name, "family": family, "recipe": name, "fold": fold, "epochs_planned": planned or len(val),
            "best_epoch": best, "epochs_done": len(val), "history": hist, "train_minutes": len(val) * 1.0,
            "finished": finished, "val_miou": max(val), **extra}


def make_runs(root):
    runs = {
        "unet_effnet/fold0": fake_metrics("unet_effnet", "unet_effnet", 0, [0.2, 0.4, 0.5]),
        "unet_effnet/fold1": fake_metrics("unet_effnet", "unet_effnet", 1, [0.3, 0.45], finished=False, planned=3),
        "student_twin/fold0": fake_metrics("student_twin", "student", 0, [0.3, 0.55, 0.6]),
        "student/fold0": fake_metrics("student", "student", 0, [0.35, 0.6, 0.65]),
        "old/fold2": {"history": [{"epoch": 1, "train_loss": 1.0}]},  # older code: few fields
    }
    for rel, m in runs.items():
        (root / rel).mkdir(parents=True)
        (root / rel / "metrics.json").write_text(json.dumps(m))
    (root / "unet_effnet/fold0/model.safetensors").write_bytes(b"\0" * 2**20)
    (root / "h2o_seed/fold0").mkdir(parents=True)
    (root / "h2o_seed/fold0/metrics.json").write_text('{"name": "h2o_seed", "history": [{"epo')  # half-written
    (root / "folds").mkdir()
    (root / "folds/dsmlr-k5.json").write_text("{}")  # not a run
    return root


def test_runs_table_rows_files_and_overlay(tmp_path, capsys):
    from analysis import runs as cli

    root = make_runs(tmp_path / "runs")
    rows = {r.path: r for r in collect_runs(root)}
    assert set(rows) == {"unet_effnet/fold0", "unet_effnet/fold1", "student_twin/fold0", "student/fold0",
                         "old/fold2", "h2o_seed/fold0"}
    assert [r.path for r in collect_runs(root)][-2:] == ["student_twin/fold0", "student/fold0"]  # twin, then student
    t0 = rows["unet_effnet/fold0"]
    assert (t0.role, t0.fold, t0.status, t0.epochs_done, t0.best_epoch, t0.model_mb) == ("teacher", 0, "finished", 3, 3, 1.0)
    assert math.isclose(t0.best_miou, 0.5) and math.isclose(t0.last_miou, 0.5) and t0.minutes == 3.0
    assert rows["unet_effnet/fold1"].status == "interrupted" and rows["unet_effnet/fold1"].epochs_planned == 3
    assert rows["student_twin/fold0"].role == "twin" and rows["student/fold0"].role == "student"
    assert rows["student_twin/fold0"].family == rows["student/fold0"].family == "student"
    broken = rows["h2o_seed/fold0"]
    assert broken.status == "broken" and "not valid JSON" in broken.note and broken.role == "baseline"
    old = rows["old/fold2"]
    assert old.fold == 2 and old.status == "interrupted" and old.best_miou is None and old.recipe is None

    out = tmp_path / "table"
    assert cli.main([str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "broken" in printed and "Traceback" not in printed
    md = (out / "runs.md").read_text()
    assert "| student/fold0 | student | student | student | 0 | 3/3 | 65.00 | 3 | 65.00 |" in md
    assert "| old/fold2 | - | old | teacher | 2 | 1/- | - | - | - |" in md
    table = list(csv.DictReader((out / "runs.csv").open()))
    assert list(table[0]) == COLUMNS and len(table) == 6
    by_run = {r["run"]: r for r in table}
    assert by_run["unet_effnet/fold1"]["status"] == "interrupted" and by_run["unet_effnet/fold1"]["epochs"] == "2/3"
    assert by_run["h2o_seed/fold0"]["status"] == "broken" and by_run["h2o_seed/fold0"]["best mIoU"] == ""
    assert (out / "runs_overlay.png").read_bytes().startswith(PNG)


def test_runs_cli_errors_are_one_line(tmp_path, capsys):
    from analysis import runs as cli

    assert cli.main([str(tmp_path / "nowhere")]) == 2
    (tmp_path / "empty").mkdir()
    assert cli.main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)


def run_fit(args):
    cfg = config.resolve(args)
    ds = load_dataset(cfg["data"], cfg["image_size"])
    train_idx, val_idx, _ = split_for(cfg, ds)
    return fit(cfg, ds, train_idx, val_idx)


def test_progress_picture_resume_and_provenance(tiny_data, tmp_path):
    from analysis import report

    out = tmp_path / "runs" / "tiny" / "fold0"
    run_fit(tiny_overrides(tiny_data, out, epochs=1))
    picture = out / "progress.png"
    first = picture.read_bytes()
    assert first.startswith(PNG)
    metrics = json.loads((out / "metrics.json").read_text())
    prov = metrics["provenance"]
    assert PROVENANCE_KEYS <= set(prov), prov
    assert set(prov["versions"]) >= {"torch", "timm", "segmentation_models_pytorch"} and prov["hardware"]["cpu"]
    assert prov["git_commit"] == "unknown" or len(prov["git_commit"]) == 40
    meta = read_metadata(out / "model.safetensors")["provenance"]
    assert PROVENANCE_KEYS <= set(meta) and meta["git_commit"] == prov["git_commit"]

    resumed = run_fit(tiny_overrides(tiny_data, out, epochs=2))  # one more epoch on the same run
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert json.loads((out / "metrics.json").read_text())["epochs_done"] == 2
    assert picture.read_bytes() != first and picture.read_bytes().startswith(PNG)
    assert len(resumed["provenance"]["earlier_sessions"]) == 1  # the first session, before the resume

    rep = tmp_path / "report"
    assert report.main(["--oof", str(out.parent), "--data", str(tiny_data), "--out", str(rep), "--worst", "1"]) == 0
    assert (rep / "img/progress_fold0.png").read_bytes() == picture.read_bytes()
    assert 'src="img/progress_fold0.png"' in (rep / "report.html").read_text()


def test_a_picture_that_cannot_be_drawn_never_stops_training(tmp_path, monkeypatch, capsys):
    from workbench.reports import curves

    def broken(*_):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(curves, "progress_chart", broken)
    monkeypatch.setattr(history, "_drawing_failed", False)
    for _ in range(3):
        history.draw_progress(tmp_path, {"history": []})
    assert capsys.readouterr().out.count("could not draw") == 1
