"""Scaling out (README "Scaling out"): one run over two processes (torchrun, gloo), folds as jobs of
submitit's local executor, done markers, and inference shards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, make_tiny_dataset, tiny_overrides
from workbench.core import config
from workbench.data.dataset import load_dataset
from workbench.data.folds import split_for
from workbench.distillation.teachers import collect_teachers
from workbench.evaluation.metrics import confusion_from_probs, iou_per_class
from workbench.exceptions import ConfigError, DistillError
from workbench.inference.cli import main as infer
from workbench.inference.jobs import plan_jobs
from workbench.inference.tta import predict_arrays
from workbench.models.modelfile import load_model
from workbench.training import distributed, fit
from workbench.training.done import DONE, not_done_reason
from workbench.training.launch import fold_jobs, parse_folds, resources

# train.py under torchrun, keeping each rank's weights (last epoch, then the best ones it exports).
WORKER = """
import os, runpy, sys, torch
sys.path.insert(0, {repo!r})
from workbench.training.trainer import Trainer
real_finish = Trainer.finish
def finish(self):
    torch.save(self.model.state_dict(), os.path.join({keep!r}, f"last_rank{{self.dist.rank}}.pt"))
    metrics = real_finish(self)
    torch.save(self.model.state_dict(), os.path.join({keep!r}, f"best_rank{{self.dist.rank}}.pt"))
    return metrics
Trainer.finish = finish
sys.argv = [{train!r}, *sys.argv[1:]]
runpy.run_path({train!r}, run_name="__main__")
"""


def torchrun(script: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_torchrun_two_processes(tiny_data, tmp_path):
    """Two gloo processes: an interrupted-then-resumed run ends with the same weights on both ranks,
    rank 0's files only, and a logged validation mIoU equal to a single-process evaluation."""
    out, keep = tmp_path / "run", tmp_path / "ranks"
    keep.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(repo=str(REPO), keep=str(keep), train=str(REPO / "train.py")))
    args = tiny_overrides(tiny_data, out, epochs=2, precision="fp32")

    cut = torchrun(script, [*args, "max_steps=1"], tmp_path)  # 1 step = epoch 1 of 2: stops, not done
    assert cut.returncode == 0, cut.stdout[-3000:] + cut.stderr[-3000:]
    assert cut.stdout.count("epoch   1/2") == 1  # rank 1 prints nothing
    assert (out / "model.safetensors").exists() and not (out / DONE).exists()
    assert not_done_reason(out) == "unfinished (no done marker)"

    r = torchrun(script, args, tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "resuming from" in r.stdout and "2 processes (DDP)" in r.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2] and metrics["finished"]
    assert (out / DONE).exists() and not_done_reason(out) is None
    assert metrics["history"][0]["images_per_s"] > 0

    for kind in ("last", "best"):
        a, b = (torch.load(keep / f"{kind}_rank{r}.pt", weights_only=True) for r in (0, 1))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (kind, k)
    model, meta = load_model(out / "model.safetensors")
    best = torch.load(keep / "best_rank0.pt", weights_only=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, best[k]), k

    # The saved model evaluated by one process on the whole held-out fold, as the trainer validates.
    cfg = config.resolve(args)
    ds = load_dataset(cfg["data"], cfg["image_size"])
    _, val_idx, _ = split_for(cfg, ds)
    model = model.to(memory_format=torch.channels_last).eval()
    probs = predict_arrays(model, ds.images[val_idx], meta["normalization"], torch.device("cpu"), precision="fp32")
    iou = iou_per_class(confusion_from_probs(probs, [ds.full_masks[i] for i in val_idx], ds.schema.num_classes))
    # equal up to a few pixels: each rank predicts its shard in smaller batches, and on some CPUs (an
    # AVX-512 Xeon here) oneDNN's convolutions round differently with the batch size, so an arg-max
    # near a tie can flip; a rank's confusion counts lost or counted twice would move it far more
    assert float(np.nanmean(iou)) == pytest.approx(metrics["val_miou"], abs=1e-3)


def test_single_process_helpers_are_identities():
    d, device = distributed.setup("cpu")
    assert d is distributed.SINGLE and not d.active and d.is_main and device.type == "cpu"
    idx, cm = np.arange(7), np.arange(25, dtype=np.int64).reshape(5, 5)
    assert d.shard(idx) is idx and d.sum(cm) is cm and d.all_true(False) is False and d.rank_seed(17) == 17
    model = torch.nn.Linear(2, 2)
    assert d.wrap(model) is model and d.sampler(list(range(4)), 0) is None
    assert d.epoch_totals([1.0, 2.0], 5) == (1.5, 5)


# ------------------------------------------------------------------------------------ fold jobs
def launch_args(data: Path, **extra) -> list[str]:
    args = [a for a in tiny_overrides(data, Path("unused"), name="tiny", **extra) if not a.startswith(("out=", "fold="))]
    return args


def test_two_folds_as_local_jobs_one_failing(tmp_path, monkeypatch, capsys):
    pytest.importorskip("submitit")
    from workbench.training.launch import launch

    data = make_tiny_dataset(tmp_path / "tiny")
    monkeypatch.chdir(tmp_path)
    argv = launch_args(data, launcher="local", folds_to_run="0-1", jobs_parallel=2)
    cfg = config.resolve(argv)
    bad = tmp_path / "runs" / "tiny" / "fold1"
    bad.mkdir(parents=True)
    torch.save({"model": {}, "optimizer": {}, "scheduler": {}, "state": "{}",  # a checkpoint of another config
                "config": dict(cfg, lr=0.5, fold=1, launcher="none")}, bad / "last.pt")

    assert launch(cfg, argv) == 1
    text = capsys.readouterr().out
    assert "fold 1 failed: error: " in text and "re-run it alone:" in text and "fold=1" in text
    log = Path(text.split("fold 1 failed")[1].split("log: ")[1].split()[0])
    error = next(line for line in log.read_text().splitlines() if line.startswith("error: "))
    assert f"fold 1 failed: {error}" in text
    good = tmp_path / "runs" / "tiny" / "fold0"
    assert (good / DONE).exists() and (good / "model.safetensors").exists() and not_done_reason(good) is None
    assert not (bad / DONE).exists()
    done_before = (good / DONE).read_text()

    (bad / "last.pt").unlink()  # fix fold 1 and send the same command again: only fold 1 runs
    assert launch(cfg, argv) == 0
    text = capsys.readouterr().out
    assert "fold 0: already done" in text and not_done_reason(bad) is None
    assert (good / DONE).read_text() == done_before
    job = json.loads((bad / "metrics.json").read_text())
    assert job["fold"] == 1 and job["finished"]


def test_fold_job_commands(tiny_data, tmp_path):
    argv = launch_args(tiny_data, launcher="slurm", folds_to_run="[0,2]", gpus_per_job=2,
                       sbatch_options="[account=lab, mem=64G]")
    cfg = config.resolve(argv)
    jobs = fold_jobs(cfg, argv)
    assert [j.fold for j in jobs] == [0, 2] and [j.run_dir for j in jobs] == [Path("runs/tiny/fold0"),
                                                                            Path("runs/tiny/fold2")]
    cmd = jobs[1].command
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert cmd[-1] == "fold=2" and not any(a.startswith(("launcher=", "folds_to_run=", "gpus_per_job=")) for a in cmd)
    assert resources(cfg).options == {"account": "lab", "mem": "64G"}
    assert parse_folds(["0-2", 4], 5) == [0, 1, 2, 4]
    for bad in (["3-1"], ["x"], [5]):
        with pytest.raises(ConfigError, match="folds_to_run"):
            parse_folds(bad, 5)
    with pytest.raises(ConfigError, match="every fold"):
        fold_jobs(cfg, [*argv, f"out={tmp_path}"])


def test_job_outcomes(tmp_path):
    from workbench.training.launch import FoldJob, outcome_of

    job = FoldJob(3, ["python", "train.py", "fold=3"], tmp_path / "fold3")
    log = tmp_path / "3_0_log.err"
    log.write_text("Traceback...\nerror: dataset d has 1 problem(s):\nmore\n")
    failed = outcome_of(job, log, RuntimeError("Command ... returned non-zero exit status 2."))
    assert not failed.done and failed.reason == "error: dataset d has 1 problem(s):" and failed.log == log
    assert outcome_of(job, tmp_path / "nolog", RuntimeError("returned non-zero exit status 137.")).reason == \
        "exit status 137"
    quiet = outcome_of(job, log, None)  # exited 0 without a done marker (e.g. max_steps)
    assert not quiet.done and quiet.reason == "exited normally but the run is missing"


def test_missing_submitit_is_one_clear_error(tiny_data, monkeypatch):
    from workbench.exceptions import LaunchError
    from workbench.training.launch import FoldJob, Resources, run_fold_jobs

    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(LaunchError, match="needs submitit: pip install -r requirements-slurm.txt"):
        run_fold_jobs([FoldJob(0, ["true"], Path("x"))], "slurm", Path("logs"), Resources())
    with pytest.raises(ConfigError, match="launcher='ray'"):
        run_fold_jobs([], "ray", Path("logs"), Resources())


def test_distill_takes_only_done_teachers(tiny_data, tmp_path):
    runs = tmp_path / "runs"
    for fold, steps in ((0, 0), (1, 1)):  # fold 1 stops after 1 of its 2 epochs: a model file, not done
        cfg = config.resolve(tiny_overrides(tiny_data, runs / "ta" / f"fold{fold}", name="ta", fold=fold, epochs=2,
                                            max_steps=steps, image_size=32, save_oof=False))
        ds = load_dataset(cfg["data"], cfg["image_size"])
        tr, va, folds_file = split_for(cfg, ds)
        fit(cfg, ds, tr, va, meta_extra={"folds_file": str(folds_file)})
    with pytest.raises(DistillError, match=r"ta fold 1 is unfinished \(no done marker\).*recipe=ta fold=1") as err:
        collect_teachers(["ta"], [0, 1], runs)
    assert "fold 0" not in str(err.value)
    assert [t.fold for t in collect_teachers(["ta"], [0], runs)] == [0]

    other = runs / "ta" / "fold0" / "model.safetensors"
    shutil.copy(runs / "ta" / "fold1" / "model.safetensors", other)  # a model file its marker does not record
    with pytest.raises(DistillError, match="ta fold 0 is inconsistent: model.safetensors is not the model file"):
        collect_teachers(["ta"], [0], runs)


# ------------------------------------------------------------------------------ inference shards
def test_shards_cover_every_file_exactly_once(tmp_path):
    src = tmp_path / "in"
    names = ["a.jpg", "b.png", "b.jpg", "c.jpg", "sub/d.jpg", "sub/e.jpg", "sub/deeper/f.jpg", "z.webp"]
    for name in names:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(b"x")
    full_jobs, full_skipped = plan_jobs(src, tmp_path / "out", recursive=True)
    assert len(full_jobs) + len(full_skipped) == len(names)  # b.png and b.jpg share a mask: one is skipped
    for n in (1, 2, 3, 5, 8, 11):
        parts = [plan_jobs(src, tmp_path / "out", True, (i, n)) for i in range(n)]
        jobs = [j for p in parts for j in p[0]]
        skipped = [s for p in parts for s in p[1]]
        assert sorted(map(str, (j.src for j in jobs))) == sorted(map(str, (j.src for j in full_jobs))), n
        assert sorted(skipped) == sorted(full_skipped), n
        dsts = [j.dst for j in jobs]
        assert len(set(dsts)) == len(dsts), n  # disjoint outputs


def test_shards_write_one_folder_together(tiny_model, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(5):
        Image.fromarray(np.full((20 + i, 30, 3), 40 * i, np.uint8)).save(src / f"img{i}.png")
    fast = ["--threads", "1", "--workers", "1", "--quiet", "--no-tta"]
    for i in range(2):
        assert infer(["--input", str(src), "--output", str(out), "--weights", str(tiny_model), "--shard", f"{i}/2",
                      *fast]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"img{i}.png" for i in range(5)]
    text = capsys.readouterr().out
    assert "done: 2 mask(s)" in text and "done: 3 mask(s)" in text
    assert infer(["--input", str(src), "--output", str(out), "--weights", str(tiny_model), "--shard", "2/2"]) == 2
    assert "expected i/n with 0 <= i < n" in capsys.readouterr().err
