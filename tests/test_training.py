"""Training on tiny images: a 2-step run, model-file round trip, and resume after interruption."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, tiny_overrides
from workbench.core import config
from workbench.data.dataset import load_dataset
from workbench.data.folds import split_for
from workbench.exceptions import ConfigError, ModelFileError
from workbench.models.modelfile import load_model, read_metadata
from workbench.training import fit
from workbench.training.oof import load_oof


def run_fit(args):
    cfg = config.resolve(args)
    ds = load_dataset(cfg["data"], cfg["image_size"])
    train_idx, val_idx, _ = split_for(cfg, ds)
    return cfg, ds, fit(cfg, ds, train_idx, val_idx)


def test_two_step_training_writes_everything(tiny_data, tmp_path):
    out = tmp_path / "run"
    cfg, ds, metrics = run_fit(tiny_overrides(tiny_data, out, max_steps=2, epochs=2))
    assert metrics["history"][0]["epoch"] == 1 and len(metrics["history"]) == 1  # stopped after 2 steps
    for name in ("config.yaml", "last.pt", "model.safetensors", "metrics.json", "oof.json"):
        assert (out / name).exists(), name
    assert 0 <= metrics["val_miou"] <= 1 and len(metrics["val_iou"]) == 5
    oof = load_oof(out)
    assert oof.probs.dtype == np.uint8 and oof.probs.shape[1:] == (5, 64, 64)
    assert sorted(oof.stems) == sorted(ds.stems[i] for i in split_for(cfg, ds)[1])


def test_model_file_round_trip(tiny_data, tmp_path):
    out = tmp_path / "run"
    cfg, ds, _ = run_fit(tiny_overrides(tiny_data, out, max_steps=1))
    meta = read_metadata(out / "model.safetensors")
    assert meta["arch"] == "unet" and meta["input_size"] == [64, 64] and meta["fold"] == 0
    assert meta["schema"]["hflip_pairs"] == [["left_light", "right_light"]]
    assert meta["normalization"]["name"] == "imagenet"
    model, meta2 = load_model(out / "model.safetensors")
    best = torch.load(out / "best_state.pt", weights_only=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, best[k]), k


def test_corrupt_model_file_is_clear(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(ModelFileError, match="bad.safetensors"):
        load_model(bad)


def test_resume_after_interruption_matches_uninterrupted(tiny_data, tmp_path, monkeypatch):
    args = lambda out: tiny_overrides(tiny_data, out, epochs=2, augment="standard")  # noqa: E731
    _, _, ref = run_fit(args(tmp_path / "ref"))

    calls = {"n": 0}
    real_step = torch.optim.AdamW.step

    def dying_step(self, *a, **k):  # "kill" the run in the middle of epoch 2
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        run_fit(args(tmp_path / "cut"))
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    ckpt = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert json.loads(ckpt["state"])["epoch"] == 1  # epoch 1 was checkpointed atomically
    assert not list((tmp_path / "cut").glob(".*tmp*"))
    _, _, resumed = run_fit(args(tmp_path / "cut"))
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    a = load_model(tmp_path / "ref" / "model.safetensors")[0].state_dict()
    b = load_model(tmp_path / "cut" / "model.safetensors")[0].state_dict()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k


def test_resume_refuses_a_different_config(tiny_data, tmp_path):
    run_fit(tiny_overrides(tiny_data, tmp_path / "r", max_steps=1))
    with pytest.raises(ConfigError, match="different config"):
        run_fit(tiny_overrides(tiny_data, tmp_path / "r", max_steps=1, lr=0.5))


def test_train_cli_reports_bad_override_without_traceback(tiny_data):
    r = subprocess.run([sys.executable, "train.py", "recipe=teacher_fold0", "epoch=1"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown key 'epoch'" in r.stderr and "Traceback" not in r.stderr


def test_train_cli_reports_bad_dataset(tiny_data, tmp_path):
    (tiny_data / "masks" / "img01.png").unlink()
    r = subprocess.run([sys.executable, "train.py", *tiny_overrides(tiny_data, tmp_path / "o")], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "img01.jpg" in r.stderr and "Traceback" not in r.stderr
